/* Loading an LFM2 or Qwen2 GGUF: the key and tensor names are those
 * llama.cpp's convert_hf_to_gguf.py writes.  Architecture "lfm2" (LFM2Model):
 *   lfm2.block_count, lfm2.embedding_length, lfm2.feed_forward_length,
 *   lfm2.attention.head_count, lfm2.attention.head_count_kv (per-layer array,
 *   0 = short-conv layer), lfm2.shortconv.l_cache, lfm2.rope.freq_base,
 *   lfm2.attention.layer_norm_rms_epsilon;
 *   token_embd, token_embd_norm (the final norm: HF's embedding_norm),
 *   blk.N.{attn_norm, ffn_norm, ffn_gate, ffn_up, ffn_down,
 *          shortconv.{conv, in_proj, out_proj},
 *          attn_q, attn_k, attn_v, attn_output, attn_q_norm, attn_k_norm}.
 * Architecture "qwen2" (Qwen2Model): the same keys under qwen2.* without
 * shortconv (head_count_kv one integer; every layer attention), final norm
 * output_norm, and per layer attn_{q,k,v}.bias instead of the QK norms.
 * Both rotate pairs (i, i + head_dim/2) (llama.cpp's NEOX RoPE type). */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MAX_DIM (1 << 20)   /* sanity bound on any one hyperparameter */

/* "<arch>.<suffix>" in buf (keys of the file's own architecture) */
#define KEY(buf, m, suffix) (snprintf(buf, sizeof buf, "%s." suffix, (m)->info.arch), buf)

static ev_status get_int(const ev_gguf *g, const char *key, int required, int64_t lo, int64_t hi,
                         int64_t *out, ev_error *err) {
    const ev_gguf_kv *kv = ev_gguf_find_kv(g, key);
    if (!kv) {
        if (required) return ev_fail(err, EV_ERR_MISSING_KEY, "model: required key '%s' is missing", key);
        return EV_OK;
    }
    int64_t v;
    switch (kv->type) {
    case GGUF_T_UINT8: case GGUF_T_UINT16: case GGUF_T_UINT32: case GGUF_T_UINT64:
        if (kv->num.u > (uint64_t)INT64_MAX) return ev_fail(err, EV_ERR_BAD_KEY, "model: key '%s' is out of range", key);
        v = (int64_t)kv->num.u;
        break;
    case GGUF_T_INT8: case GGUF_T_INT16: case GGUF_T_INT32: case GGUF_T_INT64:
        v = kv->num.i;
        break;
    default:
        return ev_fail(err, EV_ERR_BAD_KEY, "model: key '%s' must be an integer (type %u)", key, kv->type);
    }
    if (v < lo || v > hi)
        return ev_fail(err, EV_ERR_BAD_KEY, "model: key '%s' = %lld is outside [%lld, %lld]", key,
                       (long long)v, (long long)lo, (long long)hi);
    *out = v;
    return EV_OK;
}

static ev_status get_float(const ev_gguf *g, const char *key, float *out, ev_error *err) {
    const ev_gguf_kv *kv = ev_gguf_find_kv(g, key);
    if (!kv) return EV_OK;
    if (kv->type != GGUF_T_FLOAT32 && kv->type != GGUF_T_FLOAT64)
        return ev_fail(err, EV_ERR_BAD_KEY, "model: key '%s' must be a float", key);
    if (!(kv->num.f > 0 && kv->num.f < 1e30))
        return ev_fail(err, EV_ERR_BAD_KEY, "model: key '%s' = %g must be positive and finite", key, kv->num.f);
    *out = (float)kv->num.f;
    return EV_OK;
}

/* head_count_kv: a per-layer integer array (convert_hf_to_gguf writes one for
 * LFM2) or one integer for all layers. */
static ev_status get_head_kv(const ev_model *m, int n_layer, int *out, ev_error *err) {
    const ev_gguf *g = &m->gguf;
    char key[96];
    KEY(key, m, "attention.head_count_kv");
    const ev_gguf_kv *kv = ev_gguf_find_kv(g, key);
    if (!kv) return ev_fail(err, EV_ERR_MISSING_KEY, "model: required key '%s' is missing", key);
    if (kv->type != GGUF_T_ARRAY) {
        int64_t v = 0;
        ev_status st = get_int(g, key, 1, 0, MAX_DIM, &v, err);
        for (int i = 0; i < n_layer && !st; i++) out[i] = (int)v;
        return st;
    }
    size_t es = kv->arr_type == GGUF_T_UINT32 || kv->arr_type == GGUF_T_INT32 ? 4 : 0;
    if (!es) return ev_fail(err, EV_ERR_BAD_KEY, "model: '%s' must be an array of 32-bit integers", key);
    if (kv->arr_count != (uint64_t)n_layer)
        return ev_fail(err, EV_ERR_BAD_KEY, "model: '%s' has %llu entries for %d layers", key,
                       (unsigned long long)kv->arr_count, n_layer);
    for (int i = 0; i < n_layer; i++) {
        int32_t v;
        memcpy(&v, kv->arr_data + 4 * (size_t)i, 4);
        if (v < 0 || v > MAX_DIM) return ev_fail(err, EV_ERR_BAD_KEY, "model: '%s'[%d] = %d is invalid", key, i, v);
        out[i] = v;
    }
    return EV_OK;
}

/* Find a tensor and check its shape: ne0 x ne1 (ne1 = 0 for a vector). */
static ev_status find(const ev_model *m, const char *name, int64_t ne0, int64_t ne1,
                      const ev_gguf_tensor **out, int required, ev_error *err) {
    const ev_gguf_tensor *t = ev_gguf_find_tensor(&m->gguf, name);
    *out = t;
    if (!t) return required ? ev_fail(err, EV_ERR_MISSING_TENSOR, "model: required tensor '%s' is missing", name) : EV_OK;
    int want_dims = ne1 ? 2 : 1;
    int64_t got1 = t->n_dims >= 2 ? t->ne[1] : 0;
    if ((int)t->n_dims != want_dims || t->ne[0] != ne0 || got1 != ne1)
        return ev_fail(err, EV_ERR_TENSOR_SHAPE, "model: tensor '%s' has shape [%lld, %lld] (%u dims), expected [%lld, %lld]",
                       name, (long long)t->ne[0], (long long)got1, t->n_dims, (long long)ne0, (long long)ne1);
    return EV_OK;
}

static ev_status load_vec(ev_model *m, const char *name, int64_t ne0, int64_t ne1, float **out, ev_error *err) {
    const ev_gguf_tensor *t;
    ev_status st = find(m, name, ne0, ne1, &t, 1, err);
    if (st) return st;
    int64_t rows = ne1 ? ne1 : 1;
    float *v = malloc((size_t)(ne0 * rows) * sizeof(float));
    if (!v) return ev_fail(err, EV_ERR_NOMEM, "model: out of memory for '%s'", name);
    uint64_t rb = ev_type_row_bytes(t->type, ne0);
    for (int64_t r = 0; r < rows; r++) ev_dequantize_row((ev_type)t->type, (const uint8_t *)t->data + r * rb, v + r * ne0, ne0);
    *out = v;
    return EV_OK;
}

/* Prepare a matrix for ev_matmul (a copy, maybe repacked), then release the
 * file pages it came from, except token_embd's: embedding lookups read them. */
static ev_status prepare(const ev_model *m, const ev_gguf_tensor *t, const char *name, ev_weights **out, ev_error *err) {
    int rc = ev_weights_prepare_in(m->arena, out, (ev_type)t->type, t->data, t->ne[1], t->ne[0]);
    if (rc == EV_KERNEL_OK && t != m->tok_embd) ev_gguf_release(&m->gguf, t->data, t->nbytes);
    if (rc == EV_KERNEL_ENOMEM)
        return ev_fail(err, EV_ERR_NOMEM, "model: out of memory preparing '%s'", name);
    if (rc != EV_KERNEL_OK)
        return ev_fail(err, EV_ERR_INTERNAL, "model: preparing weights of '%s' (type %u, %lld x %lld) failed (kernel error %d)",
                       name, t->type, (long long)t->ne[1], (long long)t->ne[0], rc);
    return EV_OK;
}

static ev_status load_mat(ev_model *m, const char *name, int64_t cols, int64_t rows, ev_weights **out, ev_error *err) {
    const ev_gguf_tensor *t;
    ev_status st = find(m, name, cols, rows, &t, 1, err);
    return st ? st : prepare(m, t, name, out, err);
}

static ev_status load_hparams(ev_model *m, int **head_kv, ev_error *err) {
    const ev_gguf *g = &m->gguf;
    ev_model_info *in = &m->info;
    const ev_gguf_kv *arch = ev_gguf_find_kv(g, "general.architecture");
    char k[96];
    if (!arch) return ev_fail(err, EV_ERR_MISSING_KEY, "model: required key 'general.architecture' is missing");
    if (arch->type == GGUF_T_STRING && ev_str_eq(arch->str, "lfm2")) m->arch = EV_ARCH_LFM2;
    else if (arch->type == GGUF_T_STRING && ev_str_eq(arch->str, "qwen2")) m->arch = EV_ARCH_QWEN2;
    else {
        char pb[68];
        ev_str none = {"", 0};
        return ev_fail(err, EV_ERR_UNSUPPORTED_ARCH, "model: architecture '%s' is not supported ('lfm2' or 'qwen2')",
                       ev_printable(arch->type == GGUF_T_STRING ? arch->str : none, pb));
    }
    snprintf(in->arch, sizeof in->arch, "%s", m->arch == EV_ARCH_LFM2 ? "lfm2" : "qwen2");
    int64_t v[8] = {0};
    ev_status st;
    if ((st = get_int(g, KEY(k, m, "embedding_length"), 1, 1, MAX_DIM, &v[0], err))) return st;
    if ((st = get_int(g, KEY(k, m, "block_count"), 1, 1, 4096, &v[1], err))) return st;
    if ((st = get_int(g, KEY(k, m, "attention.head_count"), 1, 1, 4096, &v[2], err))) return st;
    if ((st = get_int(g, KEY(k, m, "feed_forward_length"), 1, 1, MAX_DIM, &v[3], err))) return st;
    if (m->arch == EV_ARCH_LFM2 && (st = get_int(g, KEY(k, m, "shortconv.l_cache"), 1, 2, EV_MAX_L_CACHE, &v[4], err)))
        return st;
    v[5] = 0;
    if ((st = get_int(g, KEY(k, m, "context_length"), 0, 0, INT32_MAX, &v[5], err))) return st;
    v[6] = v[0] / v[2];
    if ((st = get_int(g, KEY(k, m, "attention.key_length"), 0, 1, MAX_DIM, &v[6], err))) return st;
    /* YaRN / linear scaling change the angles: refused rather than run wrong */
    const ev_gguf_kv *scaling = ev_gguf_find_kv(g, KEY(k, m, "rope.scaling.type"));
    if (scaling && !(scaling->type == GGUF_T_STRING && ev_str_eq(scaling->str, "none")))
        return ev_fail(err, EV_ERR_BAD_KEY, "model: '%s' is set; the runtime implements unscaled RoPE only", k);
    in->n_embd = (int)v[0];
    in->n_layer = (int)v[1];
    in->n_head = (int)v[2];
    in->n_ff = (int)v[3];
    in->conv_l_cache = (int)v[4];
    in->n_ctx_train = (int)v[5];
    in->head_dim = (int)v[6];
    in->rope_theta = 10000.0f;   /* llama.cpp's default when the key is absent */
    in->norm_eps = 1e-5f;
    if ((st = get_float(g, KEY(k, m, "rope.freq_base"), &in->rope_theta, err))) return st;
    if ((st = get_float(g, KEY(k, m, "attention.layer_norm_rms_epsilon"), &in->norm_eps, err))) return st;
    if (in->head_dim % 2)
        return ev_fail(err, EV_ERR_BAD_KEY, "model: head dim %d must be even for RoPE", in->head_dim);
    if ((int64_t)in->n_head * in->head_dim > MAX_DIM)   /* keeps every int product in the forward pass small */
        return ev_fail(err, EV_ERR_BAD_KEY, "model: %d heads x head dim %d exceeds %d", in->n_head, in->head_dim, MAX_DIM);
    *head_kv = malloc((size_t)in->n_layer * sizeof(int));
    if (!*head_kv) return ev_fail(err, EV_ERR_NOMEM, "model: out of memory");
    if ((st = get_head_kv(m, in->n_layer, *head_kv, err))) return st;
    in->n_head_kv = 0;
    for (int i = 0; i < in->n_layer; i++) {
        int h = (*head_kv)[i];
        if (!h && m->arch == EV_ARCH_QWEN2)
            return ev_fail(err, EV_ERR_BAD_KEY, "model: qwen2 layer %d has 0 KV heads (every layer is attention)", i);
        if (!h) continue;
        if (in->n_head_kv && h != in->n_head_kv)
            return ev_fail(err, EV_ERR_BAD_KEY, "model: attention layers with different KV head counts (%d, %d)", in->n_head_kv, h);
        if (in->n_head % h)
            return ev_fail(err, EV_ERR_BAD_KEY, "model: %d heads are not a multiple of %d KV heads", in->n_head, h);
        in->n_head_kv = h;
        in->n_attn_layers++;
    }
    return EV_OK;
}

static ev_status load_vocab(ev_model *m, ev_error *err) {
    const ev_gguf *g = &m->gguf;
    m->bos = m->eos = -1;
    const ev_gguf_kv *tm = ev_gguf_find_kv(g, "tokenizer.ggml.model");
    if (tm && tm->type == GGUF_T_STRING && tm->str.len < sizeof m->tokenizer) {
        memcpy(m->tokenizer, tm->str.ptr, (size_t)tm->str.len);
        m->tokenizer[tm->str.len] = '\0';
    }
    int64_t id = -1;
    ev_status st;
    if ((st = get_int(g, "tokenizer.ggml.bos_token_id", 0, 0, m->info.n_vocab - 1, &id, err))) return st;
    m->bos = (int32_t)id;
    id = -1;
    if ((st = get_int(g, "tokenizer.ggml.eos_token_id", 0, 0, m->info.n_vocab - 1, &id, err))) return st;
    m->eos = (int32_t)id;
    const ev_gguf_kv *types = ev_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (types) {
        if (types->type != GGUF_T_ARRAY || types->arr_type != GGUF_T_INT32 || types->arr_count > (uint64_t)m->info.n_vocab)
            return ev_fail(err, EV_ERR_BAD_KEY, "model: tokenizer.ggml.token_type must be an int32 array of at most n_vocab (%d) entries",
                           m->info.n_vocab);
        m->token_types = types->arr_data;   /* bounds checked by the GGUF reader */
        m->n_token_types = (int)types->arr_count;
    }
    const ev_gguf_kv *tok = ev_gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (!tok) return EV_OK;
    if (tok->type != GGUF_T_ARRAY || tok->arr_type != GGUF_T_STRING || tok->arr_count > (uint64_t)m->info.n_vocab)
        return ev_fail(err, EV_ERR_BAD_KEY, "model: tokenizer.ggml.tokens must be a string array of at most n_vocab (%d) entries",
                       m->info.n_vocab);
    m->n_vocab_text = (int)tok->arr_count;
    m->vocab = malloc((m->n_vocab_text ? (size_t)m->n_vocab_text : 1) * sizeof *m->vocab);
    if (!m->vocab) return ev_fail(err, EV_ERR_NOMEM, "model: out of memory for the vocab");
    return ev_gguf_str_array(tok, m->vocab, tok->arr_count, err);
}

static ev_status load_layer(ev_model *m, int il, int n_kv_head, int *attn_count, ev_error *err) {
    const ev_model_info *in = &m->info;
    ev_layer *L = &m->layers[il];
    int64_t E = in->n_embd, F = in->n_ff, D = in->head_dim;
    char name[96];
    ev_status st;
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix ".weight", il), name)
    if ((st = load_vec(m, NAME("attn_norm"), E, 0, &L->attn_norm, err))) return st;
    if ((st = load_vec(m, NAME("ffn_norm"), E, 0, &L->ffn_norm, err))) return st;
    if ((st = load_mat(m, NAME("ffn_gate"), E, F, &L->ffn_gate, err))) return st;
    if ((st = load_mat(m, NAME("ffn_up"), E, F, &L->ffn_up, err))) return st;
    if ((st = load_mat(m, NAME("ffn_down"), F, E, &L->ffn_down, err))) return st;
    L->attn_index = -1;
    if (n_kv_head == 0) {
        if ((st = load_vec(m, NAME("shortconv.conv"), in->conv_l_cache, E, &L->conv, err))) return st;
        if ((st = load_mat(m, NAME("shortconv.in_proj"), E, 3 * E, &L->in_proj, err))) return st;
        if ((st = load_mat(m, NAME("shortconv.out_proj"), E, E, &L->out_proj, err))) return st;
        return EV_OK;
    }
    L->is_attn = 1;
    L->attn_index = (*attn_count)++;
    int64_t HD = in->n_head * D, KD = n_kv_head * D;
    if (m->arch == EV_ARCH_QWEN2) {
#define BIAS(suffix) (snprintf(name, sizeof name, "blk.%d." suffix ".bias", il), name)
        if ((st = load_vec(m, BIAS("attn_q"), HD, 0, &L->bq, err))) return st;
        if ((st = load_vec(m, BIAS("attn_k"), KD, 0, &L->bk, err))) return st;
        if ((st = load_vec(m, BIAS("attn_v"), KD, 0, &L->bv, err))) return st;
#undef BIAS
    } else {
        if ((st = load_vec(m, NAME("attn_q_norm"), D, 0, &L->q_norm, err))) return st;
        if ((st = load_vec(m, NAME("attn_k_norm"), D, 0, &L->k_norm, err))) return st;
    }
    if ((st = load_mat(m, NAME("attn_q"), E, HD, &L->wq, err))) return st;
    if ((st = load_mat(m, NAME("attn_k"), E, KD, &L->wk, err))) return st;
    if ((st = load_mat(m, NAME("attn_v"), E, KD, &L->wv, err))) return st;
    if ((st = load_mat(m, NAME("attn_output"), HD, E, &L->wo, err))) return st;
#undef NAME
    return EV_OK;
}

static ev_status load_weights(ev_model *m, const int *head_kv, ev_error *err) {
    ev_model_info *in = &m->info;
    const ev_gguf_tensor *t = ev_gguf_find_tensor(&m->gguf, "token_embd.weight");
    if (!t) return ev_fail(err, EV_ERR_MISSING_TENSOR, "model: required tensor 'token_embd.weight' is missing");
    if (t->n_dims != 2 || t->ne[0] != in->n_embd || t->ne[1] < 1 || t->ne[1] > INT32_MAX)
        return ev_fail(err, EV_ERR_TENSOR_SHAPE, "model: token_embd.weight must be [n_embd=%d, n_vocab]", in->n_embd);
    m->tok_embd = t;
    in->n_vocab = (int)t->ne[1];
    int64_t nv = 0;
    char k[96];
    ev_status st = get_int(&m->gguf, KEY(k, m, "vocab_size"), 0, 1, INT32_MAX, &nv, err);
    if (st) return st;
    if (nv && nv != in->n_vocab)
        return ev_fail(err, EV_ERR_TENSOR_SHAPE, "model: %s %lld differs from token_embd rows %d",
                       k, (long long)nv, in->n_vocab);
    /* llama.cpp stores LFM2's final norm as token_embd_norm; accept output_norm too. */
    const char *norm = ev_gguf_find_tensor(&m->gguf, "token_embd_norm.weight") ? "token_embd_norm.weight" : "output_norm.weight";
    if ((st = load_vec(m, norm, in->n_embd, 0, &m->out_norm, err))) return st;
    const ev_gguf_tensor *out;
    if ((st = find(m, "output.weight", in->n_embd, in->n_vocab, &out, 0, err))) return st;
    if ((st = prepare(m, out ? out : t, out ? "output.weight" : "token_embd.weight (tied output)", &m->output, err))) return st;
    m->layers = calloc((size_t)in->n_layer, sizeof *m->layers);
    if (!m->layers) return ev_fail(err, EV_ERR_NOMEM, "model: out of memory for %d layers", in->n_layer);
    int attn_count = 0;
    for (int il = 0; il < in->n_layer; il++)
        if ((st = load_layer(m, il, head_kv[il], &attn_count, err))) return st;
    in->weight_type = (int)ev_weights_type(m->layers[0].ffn_gate);
    return EV_OK;
}

ev_status ev_model_load(const char *path, ev_model **out, ev_error *err) {
    ev_clear(err);
    if (!path || !out) return ev_fail(err, EV_ERR_INVALID_ARG, "ev_model_load: path and out must not be NULL");
    *out = NULL;
    ev_model *m = calloc(1, sizeof *m);
    if (m) m->arena = ev_arena_new();
    if (!m || !m->arena) {
        free(m);
        return ev_fail(err, EV_ERR_NOMEM, "model: out of memory");
    }
    int *head_kv = NULL;
    ev_status st = ev_gguf_open(&m->gguf, path, err);
    if (!st) st = load_hparams(m, &head_kv, err);
    if (!st) st = load_weights(m, head_kv, err);
    if (!st) st = load_vocab(m, err);
    free(head_kv);
    if (st) {
        ev_model_free(m);
        return st;
    }
    *out = m;
    return EV_OK;
}

void ev_model_free(ev_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int i = 0; i < m->info.n_layer; i++) {
            ev_layer *L = &m->layers[i];
            free(L->attn_norm); free(L->ffn_norm); free(L->conv); free(L->q_norm); free(L->k_norm);
            free(L->bq); free(L->bk); free(L->bv);
            ev_weights *w[] = {L->ffn_gate, L->ffn_up, L->ffn_down, L->in_proj, L->out_proj, L->wq, L->wk, L->wv, L->wo};
            for (size_t k = 0; k < sizeof w / sizeof w[0]; k++)
                if (w[k]) ev_weights_free(w[k]);
        }
        free(m->layers);
    }
    if (m->output) ev_weights_free(m->output);
    ev_arena_free(m->arena);
    free(m->out_norm);
    free(m->vocab);
    ev_gguf_close(&m->gguf);
    free(m);
}

void ev_model_get_info(const ev_model *m, ev_model_info *info) { *info = m->info; }
int ev_model_n_vocab(const ev_model *m) { return m->info.n_vocab; }
int ev_model_n_embd(const ev_model *m) { return m->info.n_embd; }
int32_t ev_model_bos_token(const ev_model *m) { return m->bos; }
int32_t ev_model_eos_token(const ev_model *m) { return m->eos; }
const char *ev_model_tokenizer(const ev_model *m) { return m->tokenizer; }

int ev_model_token_type(const ev_model *m, int32_t id) {
    if (!m->token_types || id < 0 || id >= m->n_token_types) return 0;
    const uint8_t *p = m->token_types + (size_t)id * 4;   /* GGUF is little-endian */
    return (int)(int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

const char *ev_model_token_text(const ev_model *m, int32_t id, size_t *len) {
    if (!m->vocab || id < 0 || id >= m->n_vocab_text) return NULL;
    if (len) *len = (size_t)m->vocab[id].len;
    return m->vocab[id].ptr;
}
