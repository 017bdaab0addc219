"""C runtime logits vs transformers' Lfm2ForCausalLM (random small model).

Metrics and bounds: F32 GGUF max abs logit error < 1e-3 for prefill and 16
decode steps; greedy next-token agreement over 256 steps (teacher-forced on
PyTorch's greedy sequence) >= 99% for Q8_0 and >= 95% for Q4_0; embeddings prefill equals ids
prefill exactly (max abs diff 0) when the embeddings are the embedding rows.
"""
import numpy as np
import pytest
import torch

from edgevlm.errors import InputError
from edgevlm.runtime import Model, RuntimeInputError, Sampler
from edgevlm.runtime.gguf_export import export_lfm2_gguf
from lfm2_reference import full_logits, greedy, greedy_agreement, reference_model, trained_reference_model


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # Tiny models on a shared 2-core machine: extra torch threads only contend (40x slower here).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ref():
    return reference_model()


@pytest.fixture(scope="module")
def f32_model(ref, tmp_path_factory):
    cfg, model = ref
    path = export_lfm2_gguf(tmp_path_factory.mktemp("gguf") / "f32.gguf", cfg, model.state_dict(), qtype="f32")
    # One thread: on this shared 2-core machine a 2-thread pool mostly waits for
    # cores (see test_two_threads_give_the_same_logits for the threaded path).
    return Model.load(path, threads=1)


def test_f32_prefill_and_decode_match_pytorch(ref, f32_model):
    _, model = ref
    ids = torch.randint(0, 512, (48,), generator=torch.Generator().manual_seed(1))
    want = full_logits(model, ids).numpy()
    assert np.abs(want).max() > 1.0   # the bound below is meaningful only for non-tiny logits
    s = f32_model.session(n_ctx=64)
    got = s.prefill(ids=ids[:32].numpy())
    assert np.abs(got - want[31]).max() < 1e-3
    for t in range(32, 48):
        got = s.step(int(ids[t]))
        assert np.abs(got - want[t]).max() < 1e-3, f"step {t}"
    assert s.n_past == 48


def test_two_threads_give_the_same_logits(f32_model):
    ids = np.array([4, 8, 15, 16, 23, 42], dtype=np.int32)
    one = f32_model.session(16, threads=1)
    two = f32_model.session(16, threads=2)
    assert np.array_equal(one.prefill(ids=ids), two.prefill(ids=ids))
    for t in (7, 99, 3):
        assert np.array_equal(one.step(t), two.step(t))


def test_prefill_in_chunks_equals_one_prefill(f32_model):
    ids = np.arange(1, 41, dtype=np.int32) * 7 % 512
    a = f32_model.session(64).prefill(ids=ids)
    s = f32_model.session(64)
    s.prefill(ids=ids[:13])
    b = s.prefill(ids=ids[13:])
    assert np.abs(a - b).max() < 1e-4


def test_logits_written_into_caller_array(f32_model):
    s = f32_model.session(8)
    buf = np.zeros(f32_model.n_vocab, np.float32)
    assert s.step(5, out=buf) is buf and np.abs(buf).max() > 0
    with pytest.raises(InputError):
        s.step(6, out=np.zeros(f32_model.n_vocab, np.float64))


def test_long_prompt_crosses_prefill_chunks(ref, f32_model):
    # 300 tokens > the runtime's 256-token prefill chunk
    _, model = ref
    ids = torch.randint(0, 512, (300,), generator=torch.Generator().manual_seed(2))
    want = full_logits(model, ids).numpy()[-1]
    got = f32_model.session(n_ctx=300).prefill(ids=ids.numpy())
    assert np.abs(got - want).max() < 1e-3


def test_embeds_prefill_equals_ids_prefill(ref, f32_model):
    _, model = ref
    ids = np.array([5, 17, 300, 42, 9], dtype=np.int32)
    emb = model.model.embed_tokens.weight.detach()[torch.from_numpy(ids).long()].numpy()
    a = f32_model.session(16).prefill(ids=ids)
    b = f32_model.session(16).prefill(embeds=emb)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("qtype,bound", [("q8_0", 0.99), ("q4_0", 0.95)])
def test_quantized_greedy_agrees_with_pytorch(tmp_path, qtype, bound):
    # A briefly trained model: random weights have near-tied logits (see trained_reference_model).
    cfg, model = trained_reference_model()
    rm = Model.load(export_lfm2_gguf(tmp_path / "m.gguf", cfg, model.state_dict(), qtype=qtype), threads=1)
    rate = greedy_agreement(model, rm, torch.tensor([1, 20, 33, 100, 7, 81, 150, 2]), 256)
    assert rate >= bound, f"{qtype} greedy agreement {rate:.3f}"


def test_generate_streams_greedy_tokens(ref, f32_model):
    _, model = ref
    prompt = torch.tensor([3, 14, 15, 92, 65])
    want = greedy(model, prompt, 12)[len(prompt):].tolist()
    got = list(f32_model.generate(prompt.numpy(), max_new_tokens=12, sampler=Sampler()))
    assert got == want


def test_sampling_is_seeded(f32_model):
    smp = Sampler(temperature=1.0, top_k=40, top_p=0.9, seed=7)
    a = list(f32_model.generate([1, 2, 3], 20, smp))
    b = list(f32_model.generate([1, 2, 3], 20, smp))
    c = list(f32_model.generate([1, 2, 3], 20, Sampler(temperature=1.0, top_k=40, top_p=0.9, seed=8)))
    assert a == b and len(a) == 20 and a != c


def test_top_k_1_is_greedy(f32_model):
    a = list(f32_model.generate([1, 2, 3], 10, Sampler(temperature=0.8, top_k=1, seed=3)))
    b = list(f32_model.generate([1, 2, 3], 10, Sampler()))
    assert a == b


def test_bad_inputs_raise_input_errors(f32_model):
    s = f32_model.session(n_ctx=4)
    with pytest.raises(InputError, match="outside"):
        s.prefill(ids=[1, 512])
    with pytest.raises(InputError, match="outside"):
        s.prefill(ids=np.array([2**32 + 5], dtype=np.int64))   # must not wrap to 5
    with pytest.raises(InputError, match="dtype"):
        s.prefill(ids=[1.5])
    with pytest.raises(RuntimeInputError, match="outside"):   # the C check, behind the Python one
        s._s.run(0, np.array([1, 512], np.int32), 2, None)
    with pytest.raises(RuntimeInputError) as exc:
        s.prefill(ids=[1, 2, 3, 4, 5])
    assert exc.value.name == "EV_ERR_CONTEXT_FULL"
    with pytest.raises(RuntimeInputError):
        f32_model.session(n_ctx=0)
    with pytest.raises(ValueError):
        s.prefill(embeds=np.zeros((2, 3), np.float32))


def test_edgevlm_lfm2_exports_and_matches(tmp_path):
    # edgevlm's own LFM2 (fixed-size state, used by the compiler) through the same writer
    from edgevlm.models.arch.lfm2 import Lfm2Config, Lfm2ForCausalLM

    torch.manual_seed(3)
    cfg = Lfm2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=2, layer_types=["conv", "full_attention", "conv"], block_auto_adjust_ff_dim=False,
                     max_position_embeddings=64)
    model = Lfm2ForCausalLM(cfg).eval()
    model._init_weights(std=0.1)
    ids = torch.randint(0, 128, (1, 20))
    with torch.no_grad():
        want, _ = model.prefill(ids=ids, state=model.init_state(32))
    rm = Model.load(export_lfm2_gguf(tmp_path / "e.gguf", cfg, model.state_dict(), qtype="f32"))
    s = rm.session(32)
    got = s.prefill(ids=ids[0, :12].numpy())
    assert np.abs(got - want[0, 11].numpy()).max() < 1e-3
    for t in range(12, 20):
        got = s.step(int(ids[0, t]))
        assert np.abs(got - want[0, t].numpy()).max() < 1e-3


@pytest.mark.parametrize("qtype,bound", [("q8_0", 0.99), ("q4_0", 0.95)])
def test_shipped_demo_vlm_greedy_agrees_over_256_steps(tmp_path, qtype, bound):
    """The trained demo model (autoneural-nano's LM, image embeddings spliced in): greedy next-token agreement
    of the C runtime with PyTorch over 256 steps, teacher-forced on PyTorch's greedy sequence (rate >= bound)."""
    from edgevlm.compiler.runtime_bundle import prefill_vlm
    from edgevlm.data.shapes import make_sample
    from edgevlm.models import DEFAULT_MODEL, build_model

    bundle = build_model(DEFAULT_MODEL)
    vlm, tok = bundle.modules["vlm"], bundle.modules["tokenizer"]
    s = make_sample(31337, 0, vlm.image_size)
    ids = vlm.prompt_ids(tok.encode("describe the image."), tok.bos_id)
    with torch.no_grad():
        image = vlm.image_embeds(vlm.pixel_values(s.image))
        x = vlm.splice(torch.tensor([ids]), image)
        seq = []
        for _ in range(256):  # PyTorch greedy, past <eos> too: 256 steps of the float model
            token = int(vlm.lm(x)[0, -1].argmax())
            seq.append(token)
            x = torch.cat([x, vlm.lm.embed(torch.tensor([[token]]))], dim=1)
    lm = vlm.lm
    rm = Model.load(export_lfm2_gguf(tmp_path / "m.gguf", lm.config, lm.state_dict(), qtype=qtype), threads=1)
    session = rm.session(n_ctx=len(ids) + 256)
    logits = prefill_vlm(session, ids, image[0].numpy(), vlm.image_token_id)
    agree = 0
    for token in seq:
        agree += int(logits.argmax()) == token
        logits = session.step(token)
    rate = agree / 256
    assert rate >= bound, f"{qtype} greedy agreement {rate:.3f} on the shipped demo model"
