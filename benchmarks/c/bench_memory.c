/* bench_memory.c - memory read bandwidth and matmul kernel throughput.
 *
 *   bench_memory read  THREADS MIB REPS          streaming read, GB/s
 *   bench_memory gemv  THREADS TYPE ROWS COLS REPS   n = 1 matmul, GB/s of weights
 *   bench_memory gemm  THREADS TYPE ROWS COLS N REPS n = N matmul, GMAC/s
 *
 * TYPE is q8_0, q4_0, f16 or f32.  Prints one JSON object per run with the
 * best and median of REPS timed runs (after one warm-up).  The read test
 * sums 16-byte vectors with eight independent accumulators per thread over a
 * buffer much larger than the last-level cache, split evenly across the
 * runtime's own thread pool: the same threads that run decode.  Both tests
 * read memory the way decode does: from the runtime's weight arena (2 MiB
 * huge pages where the OS gives them) with the kernels' software prefetch. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fp16.h"
#include "kernels_internal.h"
#include "threadpool.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    const uint64_t *buf;
    size_t words;
    uint64_t sums[64];
} read_job;

/* 16-byte vectors (GCC/Clang vector extension, plain SSE2 / NEON loads):
 * eight independent accumulators keep many loads in flight. */
typedef uint64_t v2u64 __attribute__((vector_size(16)));

static void read_task(void *ctx, int i, int n) {
    read_job *job = ctx;
    size_t lo = job->words * (size_t)i / (size_t)n, hi = job->words * (size_t)(i + 1) / (size_t)n;
    const v2u64 *p = (const v2u64 *)(job->buf + (lo & ~(size_t)15));
    size_t nv = ((hi & ~(size_t)15) - (lo & ~(size_t)15)) / 2;
    v2u64 a[8] = {{0}};
    for (size_t k = 0; k + 8 <= nv; k += 8) {
        ev_prefetch_ahead((const uint8_t *)(p + k), 128);
        for (int u = 0; u < 8; u++) a[u] += p[k + u];
    }
    for (int u = 1; u < 8; u++) a[0] += a[u];
    job->sums[i % 64] = a[0][0] + a[0][1]; /* keeps the loads live */
}

static void report(const char *test, const char *extra, double *secs, int reps, double units, const char *unit) {
    qsort(secs, (size_t)reps, sizeof *secs, cmp_double);
    printf("{\"test\": \"%s\", %s\"best_%s\": %.3f, \"median_%s\": %.3f, \"reps\": %d}\n", test, extra, unit,
           units / secs[0], unit, units / secs[reps / 2], reps);
}

static ev_type parse_type(const char *s) {
    if (!strcmp(s, "q8_0")) return EV_TYPE_Q8_0;
    if (!strcmp(s, "q4_0")) return EV_TYPE_Q4_0;
    if (!strcmp(s, "f16")) return EV_TYPE_F16;
    if (!strcmp(s, "f32")) return EV_TYPE_F32;
    fprintf(stderr, "bench_memory: unknown type '%s' (use q8_0, q4_0, f16, f32)\n", s);
    exit(2);
}

/* Random ggml-layout matrix (scales in [0.001, 0.01]). */
static uint8_t *random_matrix(ev_type t, int64_t rows, int64_t cols, size_t *bytes) {
    size_t rb = ev_row_bytes(t, cols), bb = t == EV_TYPE_Q8_0 ? EV_Q8_0_BYTES : EV_Q4_0_BYTES;
    uint8_t *w;
    uint64_t s = 88172645463325252ull;
    *bytes = rb * (size_t)rows;
    w = malloc(*bytes);
    if (!w) { fprintf(stderr, "bench_memory: out of memory\n"); exit(2); }
    for (size_t i = 0; i < *bytes; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        w[i] = (uint8_t)s;
    }
    if (t == EV_TYPE_F16 || t == EV_TYPE_F32) { /* finite values */
        for (int64_t i = 0; i < rows * cols; i++) {
            float v = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
            if (t == EV_TYPE_F16) { uint16_t h = ev_fp32_to_fp16(v); memcpy(w + 2 * i, &h, 2); }
            else memcpy(w + 4 * i, &v, 4);
        }
    } else {
        for (size_t off = 0; off < *bytes; off += bb) {
            uint16_t h = ev_fp32_to_fp16(0.001f + 0.009f * (float)((off / bb) % 97) / 97.0f);
            memcpy(w + off, &h, 2);
        }
    }
    return w;
}

int main(int argc, char **argv) {
    ev_threadpool *tp;
    if (argc < 3) {
        fprintf(stderr, "usage: bench_memory read THREADS MIB REPS | gemv THREADS TYPE ROWS COLS REPS | "
                        "gemm THREADS TYPE ROWS COLS N REPS\n");
        return 2;
    }
    tp = ev_threadpool_create(atoi(argv[2]));
    if (!tp) { fprintf(stderr, "bench_memory: bad thread count\n"); return 2; }
    if (!strcmp(argv[1], "read") && argc == 5) {
        size_t bytes = (size_t)atol(argv[3]) << 20;
        int reps = atoi(argv[4]);
        double *secs = calloc((size_t)reps, sizeof *secs);
        read_job job;
        char extra[64];
        memset(&job, 0, sizeof job);
        job.words = bytes / 8;
        ev_arena *arena = ev_arena_new();
        job.buf = arena ? ev_arena_alloc(arena, bytes) : NULL;
        if (!job.buf || !secs || reps < 1) { fprintf(stderr, "bench_memory: out of memory\n"); return 2; }
        memset((void *)job.buf, 1, bytes);
        ev_threadpool_run(tp, read_task, &job, ev_threadpool_n_threads(tp));
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            ev_threadpool_run(tp, read_task, &job, ev_threadpool_n_threads(tp));
            secs[r] = now() - t0;
        }
        snprintf(extra, sizeof extra, "\"threads\": %d, \"mib\": %zu, ", ev_threadpool_n_threads(tp), bytes >> 20);
        report("read", extra, secs, reps, (double)bytes / 1e9, "gbps");
        ev_arena_free(arena);
        free(secs);
    } else if ((!strcmp(argv[1], "gemv") && argc == 7) || (!strcmp(argv[1], "gemm") && argc == 8)) {
        int gemm = !strcmp(argv[1], "gemm");
        ev_type t = parse_type(argv[3]);
        int64_t rows = atol(argv[4]), cols = atol(argv[5]), n = gemm ? atol(argv[6]) : 1;
        int reps = atoi(argv[gemm ? 7 : 6]);
        size_t bytes;
        uint8_t *w = random_matrix(t, rows, cols, &bytes);
        ev_weights *W = NULL;
        ev_arena *arena = ev_arena_new();
        float *x = calloc((size_t)(n * cols), sizeof(float)), *y = calloc((size_t)(n * rows), sizeof(float));
        double *secs = calloc((size_t)reps, sizeof *secs);
        char extra[192];
        if (!x || !y || !secs || !arena || reps < 1 || ev_weights_prepare_in(arena, &W, t, w, rows, cols)) {
            fprintf(stderr, "bench_memory: bad shape or out of memory\n");
            return 2;
        }
        free(w);
        for (int64_t i = 0; i < n * cols; i++) x[i] = (float)(i % 13) - 6.0f;
        ev_matmul(tp, W, x, n, y);
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            ev_matmul(tp, W, x, n, y);
            secs[r] = now() - t0;
        }
        snprintf(extra, sizeof extra, "\"threads\": %d, \"type\": \"%s\", \"rows\": %lld, \"cols\": %lld, \"n\": %lld, "
                 "\"variant\": \"%s\", ", ev_threadpool_n_threads(tp), argv[3], (long long)rows, (long long)cols,
                 (long long)n, ev_weights_variant_name(W));
        if (gemm) report("gemm", extra, secs, reps, (double)rows * (double)cols * (double)n / 1e9, "gmacps");
        else report("gemv", extra, secs, reps, (double)bytes / 1e9, "gbps");
        ev_weights_free(W);
        ev_arena_free(arena);
        free(x); free(y); free(secs);
    } else {
        fprintf(stderr, "bench_memory: bad arguments (run without arguments for usage)\n");
        return 2;
    }
    ev_threadpool_free(tp);
    return 0;
}
