# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install edgevlm with all extras, compile the default model, run it on an image
#   make test   same set-up, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.edgevlm-installed
# Reinstall when packaging or any C source changes (the extension is compiled
# at install time by scikit-build-core).
C_SOURCES := $(shell find edgevlm/runtime -name '*.c' -o -name '*.h' -o -name CMakeLists.txt 2>/dev/null)

.PHONY: demo test test-slow test-c sanitize-ci install clean test-aarch64 install-aarch64-tools

$(STAMP): pyproject.toml CMakeLists.txt $(C_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: the CPU build; an unpinned torch pulls CUDA wheels.
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

DEMO_IMAGE := edgevlm/data/demo/shapes.png
DEMO_BUILD := build/autoneural-nano-sa8295p

# Compile the default model for the SA8295P, then answer on the bundled image
# through the build (quantized ONNX vision + the C runtime on its GGUF).
demo: $(STAMP)
	$(VENV)/bin/edgevlm compile --target sa8295p
	$(VENV)/bin/edgevlm run $(DEMO_BUILD) --image $(DEMO_IMAGE) --prompt "describe the image."
	@$(PY) -c "import json; print('expected:', json.load(open('edgevlm/data/demo/shapes.json'))['answer'])"

test: $(STAMP)
	$(PY) -m pytest -q tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

# Cross-build the C runtime and its kernel tests for aarch64 and run them
# under qemu-user (scalar and NEON dotprod variants).  Needs the Debian
# packages from `make install-aarch64-tools`; tests/runtime/test_kernels.py
# runs the same check when they are installed and skips it otherwise.
test-aarch64:
	cmake -S . -B build-aarch64 -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/edgevlm/runtime/cmake/aarch64-linux-gnu.cmake
	cmake --build build-aarch64 --target test_kernels -j2
	qemu-aarch64 -L /usr/aarch64-linux-gnu build-aarch64/edgevlm/runtime/test_kernels

install-aarch64-tools:
	apt-get update && apt-get install -y gcc-aarch64-linux-gnu qemu-user

clean:
	rm -rf build build-* _skbuild dist *.egg-info

# Coverage-guided fuzzing of every loader (benchmarks/fuzz.py): the GGUF reader and
# model load in C (libFuzzer + ASan + UBSan), the same through the Python binding,
# a build's vlm.json / manifest.json / tokenizer.json, and the image path (atheris).
# FUZZ_SECONDS per target, one target at a time; results in benchmarks/results/fuzz.{json,md}.
# Needs clang with libFuzzer (Debian: clang libclang-rt-14-dev) and atheris (fuzz-deps);
# a target whose tools are missing is skipped with the reason.
FUZZ_SECONDS ?= 60
# the pin of pyproject.toml's `fuzz` extra
FUZZ_ATHERIS := atheris==3.0.0
.PHONY: fuzz fuzz-deps fuzz-ci
fuzz: $(STAMP) fuzz-deps
	$(PY) benchmarks/fuzz.py --seconds $(FUZZ_SECONDS)

fuzz-deps: $(STAMP)
	@$(PY) -c "import atheris" 2>/dev/null || $(PIP) install --quiet "$(FUZZ_ATHERIS)" \
	  || echo "note: could not install $(FUZZ_ATHERIS); the atheris targets will skip" >&2

# CI: each target for EDGEVLM_FUZZ_SECONDS (default 30) s must find no crash
# (tests/fuzz/test_fuzz_targets.py, slow-marked; skips where clang/atheris are missing).
fuzz-ci: $(STAMP) fuzz-deps
	$(PY) -m pytest -q -m slow tests/fuzz

# The C runtime alone: the library, edgevlm-run and the test driver built
# with -fsanitize=address,undefined, run on the bad-GGUF corpus and short decodes.
test-c: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow" tests/runtime/test_sanitizers.py tests/runtime/test_gguf_reader.py \
	  tests/runtime/test_kernels.py::test_kernels_clean_under_sanitizers

# CI's check beyond `make test` (slow-marked to keep make test under 20 min): every matmul kernel
# variant built with -fsanitize=address,undefined and run against the scalar reference.
sanitize-ci: $(STAMP)
	$(PY) -m pytest -q -m slow tests/runtime/test_kernels.py::test_kernels_clean_under_sanitizers
