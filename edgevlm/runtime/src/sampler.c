/* Token samplers: greedy, or temperature -> top-k -> top-p (nucleus) with a
 * seeded xoshiro-style RNG, so a seed reproduces its tokens. */
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

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Sort candidate ids by logit, descending (ties: lower id first).  A bottom-up
 * merge sort: qsort has no context argument, and a global would not be
 * thread-safe.  Returns 0 when out of memory (ids left unsorted). */
static int sort_ids(int32_t *ids, int n, const float *logits) {
    int32_t *tmp = malloc(sizeof(int32_t) * (size_t)n);
    if (!tmp) return 0;
    for (int w = 1; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                float a = logits[ids[i]], b = logits[ids[j]];
                tmp[k++] = (a > b || (a == b && ids[i] < ids[j])) ? ids[i++] : ids[j++];
            }
            while (i < mid) tmp[k++] = ids[i++];
            while (j < hi) tmp[k++] = ids[j++];
        }
        for (int i = 0; i < n; i++) ids[i] = tmp[i];
    }
    free(tmp);
    return 1;
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
    for (int i = 0; i < n; i++) s->ids[i] = i;
    if (!sort_ids(s->ids, n, logits)) return argmax(logits, n);
    int k = s->o.top_k > 0 && s->o.top_k < n ? s->o.top_k : n;
    float inv_t = 1.0f / s->o.temperature, mx = logits[s->ids[0]];
    double sum = 0;
    for (int i = 0; i < k; i++) sum += s->p[i] = expf((logits[s->ids[i]] - mx) * inv_t);
    if (s->o.top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < k; i++) {
            cum += s->p[i] / sum;
            if (cum >= s->o.top_p) {
                k = i + 1;
                break;
            }
        }
        sum = 0;
        for (int i = 0; i < k; i++) sum += s->p[i];
    }
    double r = next_uniform(s) * sum, acc = 0;
    for (int i = 0; i < k; i++) {
        acc += s->p[i];
        if (r < acc) return s->ids[i];
    }
    return s->ids[k - 1];
}
