/* The loaded model (LFM2 or Qwen2): hyperparameters from GGUF metadata,
 * weights bound to the mapped file and prepared for ev_matmul. */
#ifndef EV_MODEL_H
#define EV_MODEL_H

#include "edgevlm.h"
#include "gguf.h"
#include "kernels.h"

#define EV_MAX_L_CACHE 64

typedef struct {
    int is_attn;
    int attn_index;             /* slot in the session's KV cache, -1 for conv layers */
    float *attn_norm, *ffn_norm;            /* [n_embd] */
    ev_weights *ffn_gate, *ffn_up, *ffn_down;
    /* gated short conv */
    float *conv;                /* [n_embd][l_cache], tap k of channel c at conv[c*L + k] */
    ev_weights *in_proj, *out_proj;
    /* grouped-query attention */
    ev_weights *wq, *wk, *wv, *wo;
    float *q_norm, *k_norm;     /* [head_dim] (LFM2; NULL for Qwen2) */
    float *bq, *bk, *bv;        /* q/k/v biases (Qwen2; NULL for LFM2) */
} ev_layer;

typedef enum { EV_ARCH_LFM2 = 0, EV_ARCH_QWEN2 = 1 } ev_arch;

struct ev_model {
    ev_gguf gguf;
    ev_arch arch;
    ev_model_info info;
    const ev_gguf_tensor *tok_embd;
    float *out_norm;            /* [n_embd] */
    ev_weights *output;         /* output.weight, or token_embd when tied */
    ev_layer *layers;
    ev_arena *arena;            /* memory of all prepared matrices */
    ev_str *vocab;              /* tokenizer.ggml.tokens, n_vocab_text entries */
    int n_vocab_text;
    const uint8_t *token_types; /* tokenizer.ggml.token_type: n_token_types little-endian int32 in the file */
    int n_token_types;
    int32_t bos, eos;
    char tokenizer[32];
};

#endif
