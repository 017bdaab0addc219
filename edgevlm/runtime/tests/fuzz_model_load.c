/* Fuzz target: ev_model_load on arbitrary bytes, then, on whatever loads, a
 * session, a short prefill, decode steps and the vocab accessors.
 *
 * Built two ways (edgevlm/runtime/CMakeLists.txt, target ev_fuzz_model_load):
 *   - with clang and -DEV_FUZZ_ENGINE=libfuzzer: a libFuzzer binary
 *     (-fsanitize=fuzzer) that `make fuzz` / benchmarks/fuzz.py runs;
 *   - with any C compiler (default): a replay program,
 *       ev_fuzz_model_load FILE...
 *     that runs each file through the same function once (the regression
 *     test replays the corpus this way under ASan + UBSan with gcc).
 *
 * The bytes go through a memfd (a temp file where there is none) because
 * ev_model_load reads a path: the mmap path is the one users take.
 *
 * Beyond "no crash, no sanitizer report", the target checks the API's
 * promises and traps when one is broken: a failed load leaves *out NULL and
 * fills err with the same code and a message; a loaded model's accessors
 * stay in range; session calls return EV_OK or a documented error. */
#define _GNU_SOURCE   /* memfd_create */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "edgevlm.h"

#define FUZZ_N_CTX 8   /* small: each input runs at most this many tokens */

static int g_fd = -1;
static char g_path[64];

static void broken(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_model_load: API promise broken: %s (%s)\n", what, detail ? detail : "");
    __builtin_trap();
}

static int open_scratch(void) {
#if defined(__linux__) && defined(MFD_CLOEXEC)
    g_fd = memfd_create("ev_fuzz_model", MFD_CLOEXEC);
    if (g_fd >= 0) {
        snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
        return 0;
    }
#endif
    snprintf(g_path, sizeof g_path, "/tmp/ev_fuzz_model_XXXXXX");
    g_fd = mkstemp(g_path);
    return g_fd < 0 ? -1 : 0;
}

static int write_input(const uint8_t *data, size_t size) {
    if (g_fd < 0 && open_scratch() != 0) return -1;
    if (ftruncate(g_fd, 0) != 0) return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(g_fd, data + done, size - done, (off_t)done);
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return 0;
}

/* A status a session call may return on a loaded model with valid arguments. */
static void expect_ok(ev_status st, const ev_error *err, const char *call) {
    if (st == EV_OK) return;
    if (err->code != st || !err->message[0]) broken("error code/message not filled", call);
    /* NOMEM: a fuzzed shape may be large; INTERNAL: a kernel refusing a shape.
     * Anything else from a valid call on a loaded model is a bug. */
    if (st != EV_ERR_NOMEM && st != EV_ERR_INTERNAL) broken(call, err->message);
}

static void exercise(ev_model *m) {
    ev_model_info in;
    ev_model_get_info(m, &in);
    int nv = ev_model_n_vocab(m);
    if (nv < 1 || nv != in.n_vocab || ev_model_n_embd(m) != in.n_embd || in.n_embd < 1) broken("model info", "n_vocab/n_embd");
    int32_t bos = ev_model_bos_token(m), eos = ev_model_eos_token(m);
    if (bos < -1 || bos >= nv || eos < -1 || eos >= nv) broken("special token out of range", "bos/eos");
    if (strlen(ev_model_tokenizer(m)) >= 32) broken("tokenizer name", ev_model_tokenizer(m));
    /* every vocab entry is read in full: ASan sees an out-of-file pointer */
    volatile unsigned sum = 0;
    for (int32_t id = -1; id <= nv; id++) {
        size_t len = 0;
        const char *t = ev_model_token_text(m, id, &len);
        if (t) for (size_t i = 0; i < len; i++) sum += (unsigned char)t[i];
        sum += (unsigned)ev_model_token_type(m, id);
    }

    ev_session_opts o = ev_session_default_opts();
    o.n_ctx = FUZZ_N_CTX;
    o.n_threads = 1;
    ev_session *s = NULL;
    ev_error err;
    ev_status st = ev_session_new(m, &o, &s, &err);
    expect_ok(st, &err, "ev_session_new");
    if (st) return;
    float *logits = malloc(sizeof(float) * (size_t)nv);
    float *embeds = calloc((size_t)in.n_embd, sizeof(float));
    ev_sampler_opts so = {0.8f, 4, 0.9f, 7};
    ev_sampler *smp = ev_sampler_new(&so);
    if (logits && embeds && smp) {
        int32_t prompt[3] = {0, (int32_t)(1 % nv), nv - 1};
        st = ev_prefill(s, prompt, 3, logits, &err);
        expect_ok(st, &err, "ev_prefill");
        if (!st) {
            int32_t tok = ev_sampler_sample(smp, logits, nv);
            if (tok < 0 || tok >= nv) broken("sampled token out of range", "ev_sampler_sample");
            expect_ok(ev_step(s, tok, logits, &err), &err, "ev_step");
        }
        if (!st) {
            int32_t tok;
            int done;
            expect_ok(st = ev_generate_next(s, smp, eos, &tok, &done, &err), &err, "ev_generate_next");
            if (!st && (tok < 0 || tok >= nv)) broken("generated token out of range", "ev_generate_next");
        }
        if (!st) expect_ok(st = ev_prefill_embeds(s, embeds, 1, NULL, &err), &err, "ev_prefill_embeds");
        if (!st && ev_step(s, nv, NULL, &err) != EV_ERR_INVALID_ARG) broken("token id n_vocab accepted", err.message);
        if (!st) {   /* 3 more tokens fit or give CONTEXT_FULL, nothing else */
            int fits = ev_session_n_past(s) + 3 <= FUZZ_N_CTX;
            st = ev_prefill(s, prompt, 3, NULL, &err);
            if (fits) expect_ok(st, &err, "ev_prefill up to n_ctx");
            else if (st != EV_ERR_CONTEXT_FULL) broken("no EV_ERR_CONTEXT_FULL past n_ctx", ev_status_name(st));
        }
        ev_session_reset(s);
        if (ev_session_n_past(s) != 0) broken("reset", "n_past");
        expect_ok(ev_prefill(s, prompt, 1, logits, &err), &err, "ev_prefill after reset");
    }
    (void)sum;
    ev_sampler_free(smp);
    free(embeds);
    free(logits);
    ev_session_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (write_input(data, size) != 0) {
        perror("fuzz_model_load: cannot write the scratch file");
        return 0;
    }
    ev_model *m = (ev_model *)(uintptr_t)1;   /* must be set to NULL on failure */
    ev_error err;
    memset(&err, 0x5a, sizeof err);
    ev_status st = ev_model_load(g_path, &m, &err);
    if (st != EV_OK) {
        if (m != NULL) broken("*out not NULL after a failed load", ev_status_name(st));
        if (err.code != st || !memchr(err.message, '\0', sizeof err.message) || !err.message[0])
            broken("error code/message not filled", ev_status_name(st));
        if (strcmp(ev_status_name(st), "EV_ERR_UNKNOWN") == 0) broken("unknown status", err.message);
        return 0;
    }
    if (!m) broken("EV_OK without a model", "");
    exercise(m);
    ev_model_free(m);
    return 0;
}

#ifndef EV_FUZZ_LIBFUZZER
/* Replay: each argument is one input; prints "<file> ok". */
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            fprintf(stderr, "cannot open %s\n", argv[i]);
            return 2;
        }
        size_t cap = 1 << 16, len = 0, n;
        uint8_t *buf = malloc(cap);
        while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
            len += n;
            if (len == cap) {
                uint8_t *nb = realloc(buf, cap *= 2);
                if (!nb) free(buf);
                buf = nb;
            }
        }
        fclose(f);
        if (!buf) {
            fprintf(stderr, "out of memory reading %s\n", argv[i]);
            return 2;
        }
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        printf("%s ok\n", argv[i]);
    }
    return 0;
}
#endif
