/* edgevlm.h - the one public header of the edgevlm C runtime.
 *
 * The runtime runs an LFM2-style language model (gated short convolutions
 * plus a few grouped-query attention layers) or a Qwen2 at batch one, from a
 * GGUF file as llama.cpp's convert_hf_to_gguf.py and llama-quantize write it
 * (F32, F16, Q8_0, Q5_0, Q5_1, Q4_0, Q4_K, Q5_K, Q6_K tensors), or edgevlm's own writer,
 * edgevlm/runtime/gguf_export.py.  C99, libc + libm + pthreads only.
 *
 * Walkthrough
 * -----------
 *     #include "edgevlm.h"
 *
 *     ev_error err;                       // caller-owned: thread-safe errors
 *     ev_model *model;
 *     if (ev_model_load("lfm2-q8_0.gguf", &model, &err) != EV_OK) {
 *         fprintf(stderr, "%s\n", err.message);   // e.g. "truncated ..."
 *         return 1;
 *     }
 *
 *     ev_session_opts opts = ev_session_default_opts();
 *     opts.n_ctx = 2048; opts.n_threads = 2;     // threads live as long as
 *     ev_session *s;                             // the session (no thread
 *     ev_session_new(model, &opts, &s, &err);    // creation per token)
 *
 *     // Prompt: token ids, or float embeddings [n, n_embd] (image tokens).
 *     int32_t prompt[] = {1, 4093, 504};
 *     float *logits = malloc(sizeof(float) * ev_model_n_vocab(model));
 *     ev_prefill(s, prompt, 3, logits, &err);    // logits of the last token
 *
 *     ev_sampler_opts so = ev_sampler_default_opts(); // greedy
 *     so.temperature = 0.7f; so.top_k = 40; so.top_p = 0.9f; so.seed = 42;
 *     ev_sampler *smp = ev_sampler_new(&so);
 *     for (int i = 0; i < 64; i++) {
 *         int32_t tok = ev_sampler_sample(smp, logits, ev_model_n_vocab(model));
 *         if (tok == ev_model_eos_token(model)) break;
 *         // ... print ev_model_token_text(model, tok, &len), unless
 *         //     ev_model_token_type(model, tok) == 3 (a control token) ...
 *         if (ev_step(s, tok, logits, &err) != EV_OK) break;  // next logits
 *     }
 *
 *     ev_sampler_free(smp); ev_session_free(s); ev_model_free(model);
 *
 * Errors: every fallible call returns an ev_status and, when `err` is not
 * NULL, fills err->code and a one-line err->message naming the cause.  The
 * runtime never calls abort() or exit().  A model is read-only after load and
 * may be shared by sessions on different threads; one session must be used
 * by one thread at a time.
 */
#ifndef EDGEVLM_H
#define EDGEVLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------ */

typedef enum {
    EV_OK = 0,
    EV_ERR_INVALID_ARG = 1,     /* NULL pointer, bad count, token out of range */
    EV_ERR_NOMEM = 2,           /* allocation failed */
    EV_ERR_IO = 3,              /* cannot open / stat / map / read the file */
    EV_ERR_BAD_MAGIC = 4,       /* not a GGUF file */
    EV_ERR_BAD_VERSION = 5,     /* GGUF version other than 3 */
    EV_ERR_TRUNCATED = 6,       /* the file ends inside a header field */
    EV_ERR_BAD_COUNT = 7,       /* tensor / key-value / array count larger than the file allows */
    EV_ERR_BAD_STRING = 8,      /* string length past the end of the file, or name too long */
    EV_ERR_BAD_KV_TYPE = 9,     /* unknown metadata value type (or nested array) */
    EV_ERR_BAD_TENSOR_TYPE = 10,/* tensor type the runtime does not read (F32, F16, Q8_0, Q4_0 only) */
    EV_ERR_BAD_SHAPE = 11,      /* bad dims count, negative or overflowing shape, row not a block multiple */
    EV_ERR_BAD_OFFSET = 12,     /* tensor data past the end of the file */
    EV_ERR_MISALIGNED = 13,     /* tensor offset not a multiple of general.alignment, or bad alignment value */
    EV_ERR_OVERLAP = 14,        /* two tensors' data overlap */
    EV_ERR_DUPLICATE = 15,      /* the same tensor name or key twice */
    EV_ERR_UNSUPPORTED_ARCH = 16,/* general.architecture is not "lfm2" or "qwen2" */
    EV_ERR_MISSING_KEY = 17,    /* a required metadata key is absent */
    EV_ERR_BAD_KEY = 18,        /* a metadata key has the wrong type or an invalid value */
    EV_ERR_MISSING_TENSOR = 19, /* a required tensor is absent */
    EV_ERR_TENSOR_SHAPE = 20,   /* a tensor's shape or type does not fit the model */
    EV_ERR_CONTEXT_FULL = 21,   /* prompt or generation longer than the session's n_ctx */
    EV_ERR_INTERNAL = 22        /* a kernel reported failure */
} ev_status;

typedef struct {
    ev_status code;
    char message[256];
} ev_error;

/* Short name of an error code ("EV_ERR_TRUNCATED"). */
const char *ev_status_name(ev_status code);

/* ---- model ------------------------------------------------------------- */

typedef struct ev_model ev_model;

/* Load a GGUF file of architecture "lfm2" or "qwen2" (as llama.cpp's
 * convert_hf_to_gguf.py writes them).  The file is validated in full
 * (header, counts, strings, offsets, alignment, shapes, required tensors)
 * before any weight is used. */
ev_status ev_model_load(const char *path, ev_model **out, ev_error *err);
void ev_model_free(ev_model *model);

typedef struct {
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int n_ctx_train, conv_l_cache, n_attn_layers;
    float rope_theta, norm_eps;
    int weight_type;            /* ggml type id of the first FFN gate weights in the file (0 F32, 1 F16,
                                   2 Q4_0, 6 Q5_0, 7 Q5_1, 8 Q8_0, 12 Q4_K, 13 Q5_K, 14 Q6_K) */
    char arch[16];              /* general.architecture: "lfm2" or "qwen2" */
} ev_model_info;

void ev_model_get_info(const ev_model *model, ev_model_info *info);
int ev_model_n_vocab(const ev_model *model);
int ev_model_n_embd(const ev_model *model);
/* Special tokens from the GGUF vocab; -1 when the file has none. */
int32_t ev_model_bos_token(const ev_model *model);
int32_t ev_model_eos_token(const ev_model *model);
/* Text of one vocab entry as stored (not NUL-terminated; *len set), or NULL
 * when the file has no vocab or id is out of range. */
const char *ev_model_token_text(const ev_model *model, int32_t id, size_t *len);
/* GGUF token type of one vocab entry (tokenizer.ggml.token_type): 1 normal,
 * 2 unknown, 3 control (e.g. <|im_end|>: not text, don't print it),
 * 4 user-defined, 5 unused, 6 byte; 0 when the file has no types or id is
 * out of range. */
int ev_model_token_type(const ev_model *model, int32_t id);
/* Tokenizer family from tokenizer.ggml.model ("gpt2", "llama", ...), or "". */
const char *ev_model_tokenizer(const ev_model *model);

/* ---- session ----------------------------------------------------------- */

typedef struct ev_session ev_session;

typedef struct {
    int n_ctx;      /* maximum tokens in the session (KV cache length) */
    int n_threads;  /* worker threads of the session's persistent pool */
} ev_session_opts;

ev_session_opts ev_session_default_opts(void);   /* n_ctx 2048, n_threads 1 */
ev_status ev_session_new(const ev_model *model, const ev_session_opts *opts,
                         ev_session **out, ev_error *err);
void ev_session_free(ev_session *s);
/* Forget all tokens (KV cache and conv state), keep the buffers. */
void ev_session_reset(ev_session *s);
/* Tokens processed so far. */
int ev_session_n_past(const ev_session *s);

/* Run n tokens (ids, or embeddings [n, n_embd] row-major) after what the
 * session has seen; when logits is not NULL, write the n_vocab logits of
 * the last token there.  Argument errors (bad id, EV_ERR_CONTEXT_FULL) leave
 * the session unchanged; after any other error, call ev_session_reset. */
ev_status ev_prefill(ev_session *s, const int32_t *ids, int n, float *logits, ev_error *err);
ev_status ev_prefill_embeds(ev_session *s, const float *embeds, int n, float *logits, ev_error *err);
/* One decode step: ev_prefill with a single token. */
ev_status ev_step(ev_session *s, int32_t token, float *logits, ev_error *err);

/* ---- sampling ---------------------------------------------------------- */

typedef struct {
    float temperature;  /* <= 0: greedy (argmax, lowest id on ties) */
    int top_k;          /* keep the k most likely tokens; <= 0: all */
    float top_p;        /* keep the smallest set with probability >= top_p; >= 1: all */
    uint64_t seed;      /* RNG seed: the same seed gives the same tokens */
} ev_sampler_opts;

typedef struct ev_sampler ev_sampler;

ev_sampler_opts ev_sampler_default_opts(void);   /* greedy, seed 0 */
ev_sampler *ev_sampler_new(const ev_sampler_opts *opts);   /* NULL on NOMEM */
void ev_sampler_free(ev_sampler *smp);
/* Pick one token id from logits [n_vocab] (logits are not modified). */
int32_t ev_sampler_sample(ev_sampler *smp, const float *logits, int n_vocab);

/* ---- generation -------------------------------------------------------- */

/* Sample a token from the session's current logits (those of the last
 * prefill/step), then run it through the model so the next logits are ready.
 * With stop_token >= 0, sampling stop_token ends generation without a step:
 * *token is set to it and *done to 1. */
ev_status ev_generate_next(ev_session *s, ev_sampler *smp, int32_t stop_token,
                           int32_t *token, int *done, ev_error *err);

/* ---- CPU features ------------------------------------------------------ */

/* SIMD levels detected at run time (bit flags). */
enum {
    EV_CPU_AVX2         = 1u << 0,
    EV_CPU_AVX512F      = 1u << 1,
    EV_CPU_AVX512_VNNI  = 1u << 2,
    EV_CPU_AVX_VNNI     = 1u << 3,
    EV_CPU_NEON         = 1u << 4,
    EV_CPU_NEON_DOTPROD = 1u << 5,
    EV_CPU_NEON_I8MM    = 1u << 6,
    EV_CPU_FMA          = 1u << 7,
    EV_CPU_F16C         = 1u << 8
};

/* Bit set of EV_CPU_* flags for the CPU this process runs on. */
unsigned ev_cpu_features(void);

/* Name of one EV_CPU_* flag ("avx2", "avx512_vnni", ...), or NULL. */
const char *ev_cpu_feature_name(unsigned flag);

#ifdef __cplusplus
}
#endif
#endif /* EDGEVLM_H */
