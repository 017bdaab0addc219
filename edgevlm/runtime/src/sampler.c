/* Token samplers: greedy, or temperature -> top-k -> top-p (nucleus) with a
 * seeded splitmix64 RNG, so a seed reproduces its tokens.
 *
 * Sorting the whole vocab every token would cost more than a decode step of
 * a small model (65536 logits), so candidates are selected with a min-heap:
 * top_k of them, or for top-p alone a growing prefix (64, 512, ...) until it
 * holds top_p of the probability mass.  Pure temperature sampling needs no
 * ordering at all. */
#include <math.h>
#include <stdlib.h>

#include "edgevlm.h"

struct ev_sampler {
    ev_sampler_opts o;
    uint64_t rng;
    int cap;            /* capacity of the candidate buffers */
    int32_t *ids;
    float *p;
};

ev_sampler_opts ev_sampler_default_opts(void) {
    ev_sampler_opts o = {0.0f, 0, 1.0f, 0};
    return o;
}

ev_sampler *ev_sampler_new(const ev_sampler_opts *opts) {
    ev_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->o = opts ? *opts : ev_sampler_default_opts();
    s->rng = s->o.seed;
    return s;
}

void ev_sampler_free(ev_sampler *s) {
    if (!s) return;
    free(s->ids);
    free(s->p);
    free(s);
}

/* splitmix64: one 64-bit state, full period, good enough for sampling. */
static double next_uniform(ev_sampler *s) {
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);   /* [0, 1) */
}

/* First index of the largest value (NaN never wins unless all are NaN).
 * Two passes, the first in 8 independent lanes so that it vectorizes: the
 * one-pass loop was ~2 % of a decode step at a 65536-token vocab. */
static int32_t argmax(const float *x, int n) {
    float lane[8], mx = -INFINITY;
    int i = 0;
    for (int j = 0; j < 8; j++) lane[j] = -INFINITY;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int j = 0; j < 8; j++) mx = lane[j] > mx ? lane[j] : mx;
    for (i = 0; i < n; i++)
        if (x[i] == mx) return i;
    return 0;
}

/* a ranks below b: lower logit, or equal logit and higher id */
static int below(const float *l, int32_t a, int32_t b) { return l[a] < l[b] || (l[a] == l[b] && a > b); }

static void sift_down(int32_t *h, int m, int i, const float *l) {
    for (;;) {
        int c = 2 * i + 1;
        if (c >= m) return;
        if (c + 1 < m && below(l, h[c + 1], h[c])) c++;
        if (!below(l, h[c], h[i])) return;
        int32_t t = h[c]; h[c] = h[i]; h[i] = t;
        i = c;
    }
}

/* ids[0..m) = the m highest logits, best first (ties: lower id first). */
static void select_top(const float *l, int n, int m, int32_t *ids) {
    for (int i = 0; i < m; i++) ids[i] = i;
    for (int i = m / 2 - 1; i >= 0; i--) sift_down(ids, m, i, l);   /* min-heap of the first m */
    for (int32_t i = m; i < n; i++)
        if (below(l, ids[0], i)) { ids[0] = i; sift_down(ids, m, 0, l); }
    for (int end = m - 1; end > 0; end--) {                          /* heap sort: best first */
        int32_t t = ids[0]; ids[0] = ids[end]; ids[end] = t;
        sift_down(ids, end, 0, l);
    }
}

static int32_t draw(ev_sampler *s, const int32_t *ids, const float *p, int k, double sum) {
    double r = next_uniform(s) * sum, acc = 0;
    for (int i = 0; i < k; i++) {
        acc += p[i];
        if (r < acc) return ids ? ids[i] : i;
    }
    return ids ? ids[k - 1] : k - 1;
}

int32_t ev_sampler_sample(ev_sampler *s, const float *logits, int n) {
    if (!s || !logits || n < 1) return -1;
    if (!(s->o.temperature > 0)) return argmax(logits, n);
    if (s->cap < n) {
        int32_t *ids = realloc(s->ids, sizeof(int32_t) * (size_t)n);
        if (ids) s->ids = ids;
        float *p = realloc(s->p, sizeof(float) * (size_t)n);
        if (p) s->p = p;
        if (!ids || !p) return argmax(logits, n);   /* out of memory: degrade to greedy */
        s->cap = n;
    }
    const float inv_t = 1.0f / s->o.temperature, mx = logits[argmax(logits, n)];
    const int top_k = s->o.top_k > 0 && s->o.top_k < n ? s->o.top_k : n;
    const int use_p = s->o.top_p < 1.0f;
    if (top_k == n && !use_p) {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += s->p[i] = expf((logits[i] - mx) * inv_t);
        return draw(s, NULL, s->p, n, sum);
    }
    /* mass of the whole top-k set, needed to normalize top-p */
    double total = 0;
    if (top_k == n)
        for (int i = 0; i < n; i++) total += expf((logits[i] - mx) * inv_t);
    int m = top_k < n ? top_k : (n < 64 ? n : 64);
    for (;;) {
        select_top(logits, n, m, s->ids);
        double sum = 0;
        for (int i = 0; i < m; i++) sum += s->p[i] = expf((logits[s->ids[i]] - mx) * inv_t);
        if (top_k < n) total = sum;
        int k = m;
        if (use_p) {
            double cum = 0;
            for (k = 0; k < m && cum < s->o.top_p * total; k++) cum += s->p[k];
            if (cum < s->o.top_p * total && m < top_k) {   /* nucleus not inside the prefix yet */
                m = m * 8 < top_k ? m * 8 : top_k;
                continue;
            }
            if (k < 1) {   /* top_p <= 0: keep the best token */
                k = 1;
                cum = s->p[0];
            }
            sum = cum;
        }
        return draw(s, s->ids, s->p, k, sum);
    }
}
