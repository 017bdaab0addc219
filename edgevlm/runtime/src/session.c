/* LFM2 / Qwen2 forward pass at batch one: prefill (a chunk of tokens at a
 * time, so the projections are GEMMs) and single-token decode steps share
 * one code path.  Per layer:
 *   h = x + mixer(rmsnorm(x)),  out = h + W2(silu(W1 n) * W3 n), n = rmsnorm(h)
 * where mixer is the gated short conv (in_proj -> B, C, x; conv over time of
 * B*x with l_cache taps; C * conv; out_proj) or GQA attention (LFM2: q/k
 * RMSNorm per head; Qwen2: q/k/v biases; NeoX-style RoPE, KV cache).  Qwen2
 * has attention in every layer and no conv state.  All matmuls go through
 * ev_matmul. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"
#include "threadpool.h"

#define EV_UBATCH 256   /* tokens per prefill chunk: bounds the scratch buffers */

struct ev_session {
    const ev_model *m;
    ev_threadpool *tp;
    int n_ctx, n_past, ub;
    float *k_cache, *v_cache;   /* [n_attn_layers][n_ctx][n_head_kv * head_dim] */
    float *conv_state;          /* [n_layer][n_embd][conv_taps(m)] (conv layers only used) */
    float *inv_freq;            /* [head_dim / 2] */
    float *rope_cs;             /* [ub][head_dim]: cos then sin of each token's angles */
    float *x, *xn;              /* residual stream and its normed copy [ub][n_embd] */
    float *bcx;                 /* in_proj output [ub][3 n_embd] */
    float *q, *k, *v, *heads;   /* attention [ub][heads * head_dim] */
    float *mix;                 /* conv or attention block output [ub][n_embd] */
    float *gate, *up, *tmp;
    float *scores;              /* [n_head][n_ctx] */
    float *logits;              /* [n_vocab]: logits of the last token run */
    int has_logits;
};

/* Past inputs each conv channel keeps: l_cache - 1 (LFM2), 0 without convs (Qwen2). */
static size_t conv_taps(const ev_model_info *in) { return in->conv_l_cache > 1 ? (size_t)in->conv_l_cache - 1 : 0; }

ev_session_opts ev_session_default_opts(void) {
    ev_session_opts o = {2048, 1};
    return o;
}

static void *alloc_f32(size_t n, int *fail) {
    void *p = calloc(n ? n : 1, sizeof(float));
    if (!p) *fail = 1;
    return p;
}

ev_status ev_session_new(const ev_model *m, const ev_session_opts *opts, ev_session **out, ev_error *err) {
    ev_clear(err);
    if (!m || !out) return ev_fail(err, EV_ERR_INVALID_ARG, "ev_session_new: model and out must not be NULL");
    *out = NULL;
    ev_session_opts o = opts ? *opts : ev_session_default_opts();
    if (o.n_ctx < 1 || o.n_ctx > (1 << 24))
        return ev_fail(err, EV_ERR_INVALID_ARG, "ev_session_new: n_ctx %d must be in [1, 16777216]", o.n_ctx);
    if (o.n_threads < 1 || o.n_threads > 256)
        return ev_fail(err, EV_ERR_INVALID_ARG, "ev_session_new: n_threads %d must be in [1, 256]", o.n_threads);
    const ev_model_info *in = &m->info;
    ev_session *s = calloc(1, sizeof *s);
    if (!s) return ev_fail(err, EV_ERR_NOMEM, "session: out of memory");
    s->m = m;
    s->n_ctx = o.n_ctx;
    s->ub = o.n_ctx < EV_UBATCH ? o.n_ctx : EV_UBATCH;
    size_t E = (size_t)in->n_embd, ub = (size_t)s->ub, HD = (size_t)in->n_head * in->head_dim;
    size_t KD = (size_t)in->n_head_kv * in->head_dim, F = (size_t)in->n_ff;
    int fail = 0;
    s->k_cache = alloc_f32((size_t)in->n_attn_layers * o.n_ctx * KD, &fail);
    s->v_cache = alloc_f32((size_t)in->n_attn_layers * o.n_ctx * KD, &fail);
    s->conv_state = alloc_f32((size_t)in->n_layer * E * conv_taps(in), &fail);
    s->inv_freq = alloc_f32((size_t)in->head_dim / 2, &fail);
    s->rope_cs = alloc_f32(ub * in->head_dim, &fail);
    s->x = alloc_f32(ub * E, &fail);
    s->xn = alloc_f32(ub * E, &fail);
    s->bcx = alloc_f32(ub * 3 * E, &fail);
    s->q = alloc_f32(ub * HD, &fail);
    s->k = alloc_f32(ub * KD, &fail);
    s->v = alloc_f32(ub * KD, &fail);
    s->heads = alloc_f32(ub * HD, &fail);
    s->mix = alloc_f32(ub * E, &fail);
    s->gate = alloc_f32(ub * F, &fail);
    s->up = alloc_f32(ub * F, &fail);
    s->tmp = alloc_f32(ub * E, &fail);
    s->scores = alloc_f32((size_t)in->n_head * o.n_ctx, &fail);
    s->logits = alloc_f32((size_t)in->n_vocab, &fail);
    if (fail) {
        ev_session_free(s);
        return ev_fail(err, EV_ERR_NOMEM, "session: out of memory for n_ctx %d", o.n_ctx);
    }
    for (int i = 0; i < in->head_dim / 2; i++)
        s->inv_freq[i] = (float)pow((double)in->rope_theta, -2.0 * i / in->head_dim);
    s->tp = ev_threadpool_create(o.n_threads);
    if (!s->tp) {
        ev_session_free(s);
        return ev_fail(err, EV_ERR_NOMEM, "session: cannot start %d threads", o.n_threads);
    }
    *out = s;
    return EV_OK;
}

void ev_session_free(ev_session *s) {
    if (!s) return;
    if (s->tp) ev_threadpool_free(s->tp);
    float *bufs[] = {s->k_cache, s->v_cache, s->conv_state, s->inv_freq, s->rope_cs, s->x, s->xn, s->bcx, s->q, s->k,
                     s->v, s->heads, s->mix, s->gate, s->up, s->tmp, s->scores, s->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(s);
}

void ev_session_reset(ev_session *s) {
    const ev_model_info *in = &s->m->info;
    s->n_past = 0;
    s->has_logits = 0;
    memset(s->conv_state, 0, sizeof(float) * (size_t)in->n_layer * in->n_embd * conv_taps(in));
}

int ev_session_n_past(const ev_session *s) { return s->n_past; }

/* ---- elementwise pieces -------------------------------------------------- */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* cos and sin of the RoPE angles of positions p0 .. p0+n-1, computed once
 * per chunk instead of once per head and layer. */
static void rope_table(ev_session *s, int p0, int n) {
    const int D = s->m->info.head_dim, h = D / 2;
    for (int t = 0; t < n; t++) {
        float *cs = s->rope_cs + (size_t)t * D;
        for (int i = 0; i < h; i++) {
            float a = (p0 + t) * s->inv_freq[i];
            cs[i] = cosf(a);
            cs[h + i] = sinf(a);
        }
    }
}

/* NeoX / HF rotate_half layout: element i pairs with i + d/2; cs from rope_table. */
static void rope(float *v, int d, const float *cs) {
    int h = d / 2;
    for (int i = 0; i < h; i++) {
        float c = cs[i], s = cs[h + i];
        float x1 = v[i], x2 = v[i + h];
        v[i] = x1 * c - x2 * s;
        v[i + h] = x2 * c + x1 * s;
    }
}

static ev_status matmul(ev_session *s, const ev_weights *w, const float *x, int n, float *y, ev_error *err) {
    if (ev_matmul(s->tp, w, x, n, y) != 0) return ev_fail(err, EV_ERR_INTERNAL, "forward: matmul kernel failed");
    return EV_OK;
}

/* ---- mixers -------------------------------------------------------------- */

/* Elementwise steps between the matmuls run on the thread pool too: before,
 * the worker threads spun idle for about a fifth of a decode step (perf),
 * much of it while the caller ran these loops alone. */
#define EV_ELEMWISE_TASKS 8

typedef struct {
    ev_session *s;
    int il, n;
} conv_job;

/* The conv over time of channels [c0, c1) for all n tokens of the chunk. */
static void conv_channels(void *ctx, int i, int n_tasks) {
    const conv_job *job = ctx;
    ev_session *s = job->s;
    const ev_model_info *in = &s->m->info;
    const ev_layer *L = &s->m->layers[job->il];
    const int E = in->n_embd, K = in->conv_l_cache, S = K - 1, n = job->n;
    float *state = s->conv_state + (size_t)job->il * E * S;
    float win[EV_MAX_L_CACHE];
    int64_t c0, c1;
    ev_task_range(E, i, n_tasks, &c0, &c1);
    for (int64_t c = c0; c < c1; c++) {
        const float *w = L->conv + (size_t)c * K;
        float *st_c = state + (size_t)c * S;
        for (int j = 0; j < S; j++) win[j] = st_c[j];
        for (int t = 0; t < n; t++) {
            const float *row = s->bcx + (size_t)t * 3 * E;
            win[S] = row[c] * row[2 * E + c];            /* B * x */
            float acc = 0;
            for (int k = 0; k < K; k++) acc += w[k] * win[k];
            s->tmp[(size_t)t * E + c] = row[E + c] * acc; /* C * conv */
            for (int j = 0; j < S; j++) win[j] = win[j + 1];
        }
        for (int k = 0; k < S; k++) st_c[k] = win[k];
    }
}

static ev_status shortconv(ev_session *s, int il, int n, ev_error *err) {
    const ev_layer *L = &s->m->layers[il];
    ev_status st = matmul(s, L->in_proj, s->xn, n, s->bcx, err);
    if (st) return st;
    conv_job job = {s, il, n};
    ev_threadpool_run(s->tp, conv_channels, &job, EV_ELEMWISE_TASKS);
    return matmul(s, L->out_proj, s->tmp, n, s->mix, err);
}

/* Dot product with 8 independent partial sums: the compiler vectorizes this
 * at -O2 without -ffast-math (a single running sum would be a serial chain). */
static float dot(const float *restrict a, const float *restrict b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float sum = 0;
    for (; i < n; i++) sum += a[i] * b[i];
    for (int j = 0; j < 8; j++) sum += acc[j];
    return sum;
}

/* y += a x, in blocks of 8 like dot(): GCC -O2 left the plain loop scalar,
 * and it was two thirds of the attention time. */
static void axpy(float *restrict y, float a, const float *restrict x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) y[i + j] += a * x[i + j];
    for (; i < n; i++) y[i] += a * x[i];
}

typedef struct {
    ev_session *s;
    const float *kc, *vc;
    int n, p0;
} attn_job;

/* One head over all n query tokens: causal softmax(q k^T / sqrt(d)) v. */
static void attn_head(void *ctx, int h, int n_heads) {
    (void)n_heads;
    const attn_job *j = ctx;
    ev_session *s = j->s;
    const ev_model_info *in = &s->m->info;
    const int D = in->head_dim, HD = in->n_head * D, KD = in->n_head_kv * D;
    const int kvh = h / (in->n_head / in->n_head_kv);
    const float scale = 1.0f / sqrtf((float)D);
    float *sc = s->scores + (size_t)h * s->n_ctx;
    for (int t = 0; t < j->n; t++) {
        const float *q = s->q + (size_t)t * HD + (size_t)h * D;
        int n_keys = j->p0 + t + 1;
        float mx = -INFINITY;
        for (int p = 0; p < n_keys; p++) {
            sc[p] = dot(q, j->kc + (size_t)p * KD + (size_t)kvh * D, D) * scale;
            if (sc[p] > mx) mx = sc[p];
        }
        float sum = 0;
        for (int p = 0; p < n_keys; p++) sum += sc[p] = expf(sc[p] - mx);
        float *o = s->heads + (size_t)t * HD + (size_t)h * D;
        memset(o, 0, sizeof(float) * D);
        for (int p = 0; p < n_keys; p++) axpy(o, sc[p] / sum, j->vc + (size_t)p * KD + (size_t)kvh * D, D);
    }
}

static ev_status attention(ev_session *s, int il, int n, ev_error *err) {
    const ev_model_info *in = &s->m->info;
    const ev_layer *L = &s->m->layers[il];
    const int D = in->head_dim, H = in->n_head, HKV = in->n_head_kv, KD = HKV * D;
    ev_status st;
    if ((st = matmul(s, L->wq, s->xn, n, s->q, err))) return st;
    if ((st = matmul(s, L->wk, s->xn, n, s->k, err))) return st;
    if ((st = matmul(s, L->wv, s->xn, n, s->v, err))) return st;
    float *kc = s->k_cache + (size_t)L->attn_index * s->n_ctx * KD;
    float *vc = s->v_cache + (size_t)L->attn_index * s->n_ctx * KD;
    for (int t = 0; t < n; t++) {
        int pos = s->n_past + t;
        float *q = s->q + (size_t)t * H * D, *k = s->k + (size_t)t * KD, *v = s->v + (size_t)t * KD;
        const float *cs = s->rope_cs + (size_t)t * D;
        if (L->bq) {
            for (int i = 0; i < H * D; i++) q[i] += L->bq[i];
            for (int i = 0; i < KD; i++) k[i] += L->bk[i];
            for (int i = 0; i < KD; i++) v[i] += L->bv[i];
        }
        for (int h = 0; h < H; h++) {
            if (L->q_norm) rmsnorm(q + h * D, q + h * D, L->q_norm, D, in->norm_eps);
            rope(q + h * D, D, cs);
        }
        for (int h = 0; h < HKV; h++) {
            if (L->k_norm) rmsnorm(k + h * D, k + h * D, L->k_norm, D, in->norm_eps);
            rope(k + h * D, D, cs);
        }
        memcpy(kc + (size_t)pos * KD, k, sizeof(float) * KD);
        memcpy(vc + (size_t)pos * KD, v, sizeof(float) * KD);
    }
    attn_job job = {s, kc, vc, n, s->n_past};
    ev_threadpool_run(s->tp, attn_head, &job, H);
    return matmul(s, L->wo, s->heads, n, s->mix, err);
}

/* ---- one chunk of tokens -------------------------------------------------- */

typedef struct {
    float *gate;
    const float *up;
    int64_t count;
} swiglu_job;

/* gate = silu(gate) * up (the kernel variant's vectorized exp) */
static void swiglu(void *ctx, int i, int n_tasks) {
    const swiglu_job *j = ctx;
    int64_t lo, hi;
    ev_task_range(j->count, i, n_tasks, &lo, &hi);
    ev_silu_mul(j->gate + lo, j->up + lo, j->gate + lo, hi - lo);
}

/* s->x holds the n input embeddings; runs all layers, advances n_past and,
 * when want_logits, computes the logits of the last token. */
static ev_status forward(ev_session *s, int n, int want_logits, ev_error *err) {
    const ev_model *m = s->m;
    const ev_model_info *in = &m->info;
    const int E = in->n_embd, F = in->n_ff;
    ev_status st;
    if (in->n_attn_layers) rope_table(s, s->n_past, n);
    for (int il = 0; il < in->n_layer; il++) {
        const ev_layer *L = &m->layers[il];
        for (int t = 0; t < n; t++) rmsnorm(s->xn + (size_t)t * E, s->x + (size_t)t * E, L->attn_norm, E, in->norm_eps);
        st = L->is_attn ? attention(s, il, n, err) : shortconv(s, il, n, err);
        if (st) return st;
        for (size_t i = 0; i < (size_t)n * E; i++) s->x[i] += s->mix[i];
        for (int t = 0; t < n; t++) rmsnorm(s->xn + (size_t)t * E, s->x + (size_t)t * E, L->ffn_norm, E, in->norm_eps);
        if ((st = matmul(s, L->ffn_gate, s->xn, n, s->gate, err))) return st;
        if ((st = matmul(s, L->ffn_up, s->xn, n, s->up, err))) return st;
        swiglu_job sj = {s->gate, s->up, (int64_t)n * F};
        ev_threadpool_run(s->tp, swiglu, &sj, EV_ELEMWISE_TASKS);
        if ((st = matmul(s, L->ffn_down, s->gate, n, s->tmp, err))) return st;
        for (size_t i = 0; i < (size_t)n * E; i++) s->x[i] += s->tmp[i];
    }
    s->n_past += n;
    if (!want_logits) return EV_OK;
    rmsnorm(s->xn, s->x + (size_t)(n - 1) * E, m->out_norm, E, in->norm_eps);
    if ((st = matmul(s, m->output, s->xn, 1, s->logits, err))) return st;
    s->has_logits = 1;
    return EV_OK;
}

static ev_status check_room(ev_session *s, int n, const char *fn, ev_error *err) {
    if (n < 1) return ev_fail(err, EV_ERR_INVALID_ARG, "%s: n = %d tokens; need at least 1", fn, n);
    if (n > s->n_ctx - s->n_past)
        return ev_fail(err, EV_ERR_CONTEXT_FULL, "%s: %d tokens after %d do not fit in n_ctx %d", fn, n, s->n_past, s->n_ctx);
    return EV_OK;
}

static ev_status run(ev_session *s, const int32_t *ids, const float *embeds, int n, float *logits, ev_error *err) {
    const ev_model *m = s->m;
    const int E = m->info.n_embd;
    const ev_gguf_tensor *te = m->tok_embd;
    uint64_t rb = ev_type_row_bytes(te->type, E);
    ev_status st = EV_OK;
    for (int done = 0; done < n && !st; done += s->ub) {
        int c = n - done < s->ub ? n - done : s->ub;
        for (int t = 0; t < c; t++) {
            if (embeds) {
                memcpy(s->x + (size_t)t * E, embeds + (size_t)(done + t) * E, sizeof(float) * E);
            } else {
                ev_dequantize_row((ev_type)te->type, (const uint8_t *)te->data + (uint64_t)ids[done + t] * rb, s->x + (size_t)t * E, E);
            }
        }
        st = forward(s, c, done + c == n, err);
    }
    if (st) {
        s->has_logits = 0;   /* the state is part-updated: the caller must reset */
        return st;
    }
    if (logits) memcpy(logits, s->logits, sizeof(float) * (size_t)m->info.n_vocab);
    return EV_OK;
}

ev_status ev_prefill(ev_session *s, const int32_t *ids, int n, float *logits, ev_error *err) {
    ev_clear(err);
    if (!s || !ids) return ev_fail(err, EV_ERR_INVALID_ARG, "ev_prefill: session and ids must not be NULL");
    ev_status st = check_room(s, n, "ev_prefill", err);
    if (st) return st;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->m->info.n_vocab)
            return ev_fail(err, EV_ERR_INVALID_ARG, "ev_prefill: token id %d at position %d is outside [0, %d)",
                           ids[i], i, s->m->info.n_vocab);
    return run(s, ids, NULL, n, logits, err);
}

ev_status ev_prefill_embeds(ev_session *s, const float *embeds, int n, float *logits, ev_error *err) {
    ev_clear(err);
    if (!s || !embeds) return ev_fail(err, EV_ERR_INVALID_ARG, "ev_prefill_embeds: session and embeds must not be NULL");
    ev_status st = check_room(s, n, "ev_prefill_embeds", err);
    return st ? st : run(s, NULL, embeds, n, logits, err);
}

ev_status ev_step(ev_session *s, int32_t token, float *logits, ev_error *err) {
    return ev_prefill(s, &token, 1, logits, err);
}

ev_status ev_generate_next(ev_session *s, ev_sampler *smp, int32_t stop_token, int32_t *token, int *done, ev_error *err) {
    ev_clear(err);
    if (!s || !smp || !token || !done) return ev_fail(err, EV_ERR_INVALID_ARG, "ev_generate_next: NULL argument");
    *done = 0;
    if (!s->has_logits)
        return ev_fail(err, EV_ERR_INVALID_ARG, "ev_generate_next: no logits yet (prefill the prompt first)");
    int32_t tok = ev_sampler_sample(smp, s->logits, s->m->info.n_vocab);
    *token = tok;
    if (tok == stop_token) {
        *done = 1;
        return EV_OK;
    }
    return ev_step(s, tok, NULL, err);
}
