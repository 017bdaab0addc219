/* kernels.c - weight preparation, the matmul driver (threading, activation
 * quantization, the one tile driver over every variant's microkernels),
 * variant selection and the scalar reference microkernels. */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include "kernels_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "edgevlm.h"
#include "fp16.h"

/* ---------------------------------------------------------------- sizes */

static int is_quantized(ev_type t) {
    return t == EV_TYPE_Q8_0 || t == EV_TYPE_Q4_0 || t == EV_TYPE_Q5_1 || ev_is_kquant(t);
}

/* One Q5_0 block as the Q8_0 block of the same values (q - 16 in -16..15,
 * same d): exact, so Q5_0 runs on the Q8_0 kernels of every variant.  It
 * costs 34 / 22 of the bytes read per block; llama-quantize writes Q5_0 only
 * as the fallback for K-quant tensors whose rows are not whole 256-blocks. */
static void q5_0_to_q8_0(const uint8_t *src, uint8_t *dst) {
    uint32_t qh;
    memcpy(dst, src, 2);
    qh = (uint32_t)src[2] | (uint32_t)src[3] << 8 | (uint32_t)src[4] << 16 | (uint32_t)src[5] << 24;   /* little-endian */
    for (int j = 0; j < 16; j++) {
        dst[2 + j] = (uint8_t)(int8_t)(((src[6 + j] & 0x0f) | ((qh >> j) & 1) << 4) - 16);
        dst[2 + 16 + j] = (uint8_t)(int8_t)(((src[6 + j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16);
    }
}

/* One Q5_1 block (d, m, 5-bit q) as a Q8_0 block of its quants q (0..31,
 * same d), its min m returned apart: w = d q + m, so a block dot is
 * d dx sum(q x) + m dx sum(x), the sum llama.cpp's Q8_1 activations carry.
 * Exact, and the Q8_0 kernels of every variant then run it with one more
 * term per block; like Q5_0 it costs 36 / 24 of the bytes read.  llama-quantize
 * writes Q5_1 as the Q5_K fallback for rows not of whole 256-blocks (e.g.
 * most of a Qwen2-0.5B Q5_K_M, hidden 896). */
static uint16_t q5_1_to_q8_0(const uint8_t *src, uint8_t *dst) {
    uint16_t m;
    uint8_t tmp[EV_Q5_0_BYTES];
    memcpy(&m, src + 2, 2);
    memcpy(tmp, src, 2);
    memcpy(tmp + 2, src + 4, EV_Q5_0_BYTES - 2);
    q5_0_to_q8_0(tmp, dst);
    for (int j = 0; j < EV_QK; j++) dst[2 + j] = (uint8_t)(dst[2 + j] + 16);   /* undo Q5_0's offset of 16 */
    return m;
}

/* Quant bytes per block (without the fp16 scale). */
static int64_t block_qbytes(ev_type t) { return t == EV_TYPE_Q4_0 ? 16 : 32; }

/* The type table's row size (types.c, also the GGUF reader's), as size_t
 * for in-memory matrices: columns past 2^40 are refused so it cannot wrap. */
size_t ev_row_bytes(ev_type t, int64_t cols) {
    if (cols <= 0 || cols > ((int64_t)1 << 40)) return 0;
    return (size_t)ev_type_row_bytes(t, cols);
}

/* ------------------------------------------------------ variant choice */

static const ev_kernel_variant *all_variants[] = {
    &ev_variant_scalar,
#if defined(EV_KERNELS_X86)
    &ev_variant_avx2,
    &ev_variant_avx512_vnni,
#endif
#if defined(EV_KERNELS_NEON)
    &ev_variant_neon_dotprod,
#endif
};
#define N_VARIANTS (sizeof all_variants / sizeof all_variants[0])

static int cpu_runs(const ev_kernel_variant *v) {
    unsigned f = ev_cpu_features();
    if (v == &ev_variant_scalar) return 1;
#if defined(EV_KERNELS_X86)
    if (v == &ev_variant_avx2)
        return (f & (EV_CPU_AVX2 | EV_CPU_FMA | EV_CPU_F16C)) == (EV_CPU_AVX2 | EV_CPU_FMA | EV_CPU_F16C);
    if (v == &ev_variant_avx512_vnni)
        return (f & (EV_CPU_AVX512F | EV_CPU_AVX512_VNNI | EV_CPU_AVX2 | EV_CPU_FMA | EV_CPU_F16C)) ==
               (EV_CPU_AVX512F | EV_CPU_AVX512_VNNI | EV_CPU_AVX2 | EV_CPU_FMA | EV_CPU_F16C);
#endif
#if defined(EV_KERNELS_NEON)
    if (v == &ev_variant_neon_dotprod) return (f & EV_CPU_NEON_DOTPROD) != 0;
#endif
    (void)f;
    return 0;
}

static const ev_kernel_variant *best_variant(void) {
    /* the table is ordered from most portable to fastest */
    for (size_t i = N_VARIANTS; i-- > 0;)
        if (cpu_runs(all_variants[i])) return all_variants[i];
    return &ev_variant_scalar;
}

static const ev_kernel_variant *active_variant; /* NULL: auto */

/* The variant EDGEVLM_KERNELS names (e.g. "avx2", to measure what a CPU
 * without AVX-512 gets), if this CPU runs it; else the best one. */
static const ev_kernel_variant *initial_variant(void) {
    const char *name = getenv("EDGEVLM_KERNELS");
    for (size_t i = 0; name && *name && i < N_VARIANTS; i++)
        if (!strcmp(all_variants[i]->name, name) && cpu_runs(all_variants[i])) return all_variants[i];
    return best_variant();
}

static const ev_kernel_variant *current_variant(void) {
    const ev_kernel_variant *v = __atomic_load_n(&active_variant, __ATOMIC_ACQUIRE);
    if (!v) {
        v = initial_variant();
        __atomic_store_n(&active_variant, v, __ATOMIC_RELEASE);
    }
    return v;
}

int ev_kernels_force_variant(const char *name) {
    if (!name || !strcmp(name, "auto")) {
        __atomic_store_n(&active_variant, best_variant(), __ATOMIC_RELEASE);
        return EV_KERNEL_OK;
    }
    for (size_t i = 0; i < N_VARIANTS; i++) {
        if (!strcmp(all_variants[i]->name, name)) {
            if (!cpu_runs(all_variants[i])) return EV_KERNEL_EUNSUPPORTED;
            __atomic_store_n(&active_variant, all_variants[i], __ATOMIC_RELEASE);
            return EV_KERNEL_OK;
        }
    }
    return EV_KERNEL_EUNSUPPORTED;
}

const char *ev_kernels_variant_name(void) { return current_variant()->name; }
const char *ev_weights_variant_name(const ev_weights *w) { return w ? w->v->name : NULL; }
int64_t ev_weights_rows(const ev_weights *w) { return w ? w->rows : 0; }
int64_t ev_weights_cols(const ev_weights *w) { return w ? w->cols : 0; }
ev_type ev_weights_type(const ev_weights *w) { return w ? w->file_type : EV_TYPE_F32; }

/* ---------------------------------------------------------- preparation */

static void *alloc64(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? (bytes + 63) & ~(size_t)63 : 64)) return NULL;
    return p;
}

/* Weight arena: decode streams every weight once per token, and with 4 KiB
 * pages that is a TLB miss (and a stop of the hardware prefetcher, which
 * does not cross pages) every 4 KiB.  Packing all matrices of a model into
 * a few 2 MiB aligned chunks advised for transparent huge pages (Linux;
 * elsewhere plain aligned memory) removes both: measured +3-4 % Q4_0 tg
 * t/s on the LFM2-350M shape here.  Per-matrix huge pages would round each
 * matrix up to 2 MiB (tens of MB wasted); chunks waste at most the untouched
 * tail of the last one, which is never faulted in. */
#define EV_ARENA_ALIGN ((size_t)2 << 20)
#define EV_ARENA_CHUNK ((size_t)32 << 20)

typedef struct ev_arena_chunk {
    struct ev_arena_chunk *next;
    uint8_t *base;
    size_t size, used;
} ev_arena_chunk;

struct ev_arena {
    ev_arena_chunk *chunks;   /* newest first; allocation from the newest only */
};

ev_arena *ev_arena_new(void) { return calloc(1, sizeof(ev_arena)); }

void ev_arena_free(ev_arena *a) {
    if (!a) return;
    while (a->chunks) {
        ev_arena_chunk *c = a->chunks;
        a->chunks = c->next;
        free(c->base);
        free(c);
    }
    free(a);
}

void *ev_arena_alloc(ev_arena *a, size_t bytes) {
    ev_arena_chunk *c = a->chunks;
    if (bytes > SIZE_MAX - EV_ARENA_ALIGN) return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    if (!c || c->size - c->used < bytes) {
        size_t size = bytes > EV_ARENA_CHUNK ? bytes : EV_ARENA_CHUNK;
        void *p = NULL;
        size = (size + EV_ARENA_ALIGN - 1) & ~(EV_ARENA_ALIGN - 1);
        c = calloc(1, sizeof *c);
        if (!c) return NULL;
        if (posix_memalign(&p, EV_ARENA_ALIGN, size)) { free(c); return NULL; }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        (void)madvise(p, size, MADV_HUGEPAGE);   /* advice only: failure just means 4 KiB pages */
#endif
        c->base = p;
        c->size = size;
        c->next = a->chunks;
        a->chunks = c;
    }
    void *p = c->base + c->used;
    c->used += bytes;
    return p;
}

static void *weights_alloc(ev_arena *a, size_t bytes) { return a ? ev_arena_alloc(a, bytes) : alloc64(bytes); }

/* Repack ggml blocks into the interleaved layout of kernels_internal.h. */
static void pack_quantized(ev_weights *w, const uint8_t *src) {
    const int64_t qb = block_qbytes(w->type), nb = w->nb, R = w->R;
    const size_t row_bytes = ev_row_bytes(w->file_type, w->cols), bb = row_bytes / (size_t)nb;
    uint8_t conv[EV_Q8_0_BYTES];
    const uint8_t flip = (w->type != EV_TYPE_Q4_0 && w->v->xor_q8) ? 0x80 : 0x00;
    for (int64_t g = 0; g < w->n_groups; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *dst = w->qs + (size_t)((g * nb + b) * qb * R);
            uint16_t *dd = w->d + (size_t)((g * nb + b) * R), *mm = w->m ? w->m + (size_t)((g * nb + b) * R) : NULL;
            for (int64_t r = 0; r < R; r++) {
                int64_t row = g * R + r;
                const uint8_t *blk = src + (size_t)row * row_bytes + (size_t)b * bb;
                if (row < w->rows && w->file_type == EV_TYPE_Q5_0) {
                    q5_0_to_q8_0(blk, conv);
                    blk = conv;
                }
                if (row < w->rows && w->file_type == EV_TYPE_Q5_1) {
                    mm[r] = q5_1_to_q8_0(blk, conv);
                    blk = conv;
                }
                if (row >= w->rows) {
                    dd[r] = 0;
                    if (mm) mm[r] = 0;
                    for (int64_t k = 0; k < qb / 4; k++) memset(dst + (k * R + r) * 4, flip, 4);
                    continue;
                }
                memcpy(&dd[r], blk, 2);
                for (int64_t k = 0; k < qb / 4; k++)
                    for (int i = 0; i < 4; i++) dst[(k * R + r) * 4 + i] = blk[2 + k * 4 + i] ^ flip;
            }
        }
    }
}

/* The 6-bit scales and mins of Q4_K / Q5_K's 8 sub-blocks from ggml's 12
 * packed bytes: j < 4 in the low 6 bits of bytes j (scale) and j+4 (min);
 * j >= 4 in the nibbles of byte j+4 with the top 2 bits of bytes j-4 / j. */
static void unpack_scales_k4(const uint8_t *p, uint8_t sc[8], uint8_t m[8]) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            sc[j] = p[j] & 63;
            m[j] = p[j + 4] & 63;
        } else {
            sc[j] = (uint8_t)((p[j + 4] & 0x0f) | ((p[j - 4] >> 6) << 4));
            m[j] = (uint8_t)((p[j + 4] >> 4) | ((p[j] >> 6) << 4));
        }
    }
}

/* Repack one ggml K-quant block of row r into record rec (kernels_internal.h). */
static void pack_kblock(ev_type t, const uint8_t *blk, uint8_t *rec, int64_t R, int64_t r) {
    const ev_klayout L = ev_klayout_of(t);
    const uint8_t *qs, *qh = NULL, *d;
    uint8_t vals[16];
    int qh_bytes = 0;
    if (t == EV_TYPE_Q6_K) {
        qs = blk;
        qh = blk + 128;
        qh_bytes = 64;
        memcpy(vals, blk + 192, 16);
        d = blk + 208;
    } else {
        d = blk;
        unpack_scales_k4(blk + 4, vals, vals + 8);
        if (t == EV_TYPE_Q5_K) {
            qh = blk + 16;
            qh_bytes = 32;
            qs = blk + 48;
        } else {
            qs = blk + 16;
        }
    }
    for (int k = 0; k < 32; k++) memcpy(rec + (k * R + r) * 4, qs + 4 * k, 4);
    for (int k = 0; k < qh_bytes / 4; k++) memcpy(rec + L.qh * R + (k * R + r) * 4, qh + 4 * k, 4);
    for (int p = 0; p < 8; p++) memcpy(rec + L.sc * R + (p * R + r) * 2, vals + 2 * p, 2);
    memcpy(rec + L.d * R + 2 * r, d, 2);
    if (t != EV_TYPE_Q6_K) memcpy(rec + L.d * R + 2 * R + 2 * r, d + 2, 2);
}

static void pack_kquant(ev_weights *w, const uint8_t *src) {
    const int64_t nb = w->nb, R = w->R, rec = (int64_t)ev_klayout_of(w->type).rec * R;
    const size_t row_bytes = ev_row_bytes(w->type, w->cols), bb = row_bytes / (size_t)nb;
    memset(w->qs, 0, (size_t)(w->n_groups * nb * rec));   /* padded rows: all zero, d = 0 */
    for (int64_t g = 0; g < w->n_groups; g++)
        for (int64_t b = 0; b < nb; b++)
            for (int64_t r = 0; r < R && g * R + r < w->rows; r++)
                pack_kblock(w->type, src + (size_t)(g * R + r) * row_bytes + (size_t)b * bb,
                            w->qs + (g * nb + b) * rec, R, r);
}

static ev_kind kind_of(ev_type t) {
    switch (t) {
    case EV_TYPE_F32: return EV_KIND_F32;
    case EV_TYPE_F16: return EV_KIND_F16;
    case EV_TYPE_Q4_0: return EV_KIND_Q4_0;
    case EV_TYPE_Q5_1: return EV_KIND_Q5_1;
    case EV_TYPE_Q4_K: return EV_KIND_Q4_K;
    case EV_TYPE_Q5_K: return EV_KIND_Q5_K;
    case EV_TYPE_Q6_K: return EV_KIND_Q6_K;
    case EV_TYPE_Q8_0: case EV_TYPE_Q5_0: break;
    }
    return EV_KIND_Q8_0;
}

int ev_weights_prepare(ev_weights **out, ev_type t, const void *data, int64_t rows, int64_t cols) {
    return ev_weights_prepare_in(NULL, out, t, data, rows, cols);
}

int ev_weights_prepare_in(ev_arena *arena, ev_weights **out, ev_type t, const void *data, int64_t rows, int64_t cols) {
    ev_weights *w;
    size_t row_bytes;
    if (!out) return EV_KERNEL_EINVAL;
    *out = NULL;
    row_bytes = ev_row_bytes(t, cols);
    if (!data || rows <= 0 || rows > INT32_MAX || row_bytes == 0) return EV_KERNEL_EINVAL;
    if ((size_t)rows > SIZE_MAX / 2 / row_bytes) return EV_KERNEL_EINVAL;
    w = calloc(1, sizeof *w);
    if (!w) return EV_KERNEL_ENOMEM;
    w->type = t == EV_TYPE_Q5_0 ? EV_TYPE_Q8_0 : t;
    w->file_type = t;
    t = w->type;
    w->kind = kind_of(t);
    w->rows = rows;
    w->cols = cols;
    w->v = current_variant();
    w->in_arena = arena != NULL;
    if (ev_is_kquant(t)) {
        w->R = w->v->interleave;
        w->nb = cols / ev_type_info(t)->block;
        w->n_groups = (rows + w->R - 1) / w->R;
        w->qs = weights_alloc(arena, (size_t)(w->n_groups * w->R * w->nb * ev_klayout_of(t).rec));
        if (!w->qs) { ev_weights_free(w); return EV_KERNEL_ENOMEM; }
        pack_kquant(w, data);
    } else if (is_quantized(t)) {
        w->R = w->v->interleave;
        w->nb = cols / ev_type_info(t)->block;
        w->n_groups = (rows + w->R - 1) / w->R;
        w->qs = weights_alloc(arena, (size_t)(w->n_groups * w->R * w->nb * block_qbytes(t)));
        w->d = weights_alloc(arena, (size_t)(w->n_groups * w->R * w->nb) * 2);
        if (t == EV_TYPE_Q5_1) w->m = weights_alloc(arena, (size_t)(w->n_groups * w->R * w->nb) * 2);
        if (!w->qs || !w->d || (t == EV_TYPE_Q5_1 && !w->m)) { ev_weights_free(w); return EV_KERNEL_ENOMEM; }
        pack_quantized(w, data);
    } else {
        w->R = EV_FLOAT_ROWS;
        w->n_groups = (rows + w->R - 1) / w->R;
        w->qs = weights_alloc(arena, (size_t)rows * row_bytes);
        if (!w->qs) { ev_weights_free(w); return EV_KERNEL_ENOMEM; }
        memcpy(w->qs, data, (size_t)rows * row_bytes);
    }
    *out = w;
    return EV_KERNEL_OK;
}

void ev_weights_free(ev_weights *w) {
    if (!w) return;
    if (!w->in_arena) {
        free(w->qs);
        free(w->d);
        free(w->m);
    }
    free(w);
}

/* --------------------------------------------------------------- matmul */

typedef struct {
    const ev_weights *W;
    ev_acts A;
    int8_t *q;
    float *d;
    int32_t *s;
    int16_t *bs;
    int64_t n;
    float *Y;
} matmul_job;


static void quantize_task(void *ctx, int i, int n) {
    matmul_job *job = ctx;
    const int64_t cols = job->W->cols, nb = job->W->nb;
    int64_t t0, t1;
    ev_task_range(job->n, i, n, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        if (job->bs)
            job->W->v->quantize_k(job->A.x + t * cols, cols, job->q + t * cols, job->d + t * nb, job->bs + t * cols / 16);
        else
            job->W->v->quantize(job->A.x + t * cols, cols, job->q + t * cols, job->d + t * nb, job->s + t * nb);
    }
}

/* The one tile driver, for every type and variant: per group of rows, the
 * tokens in tiles of the kind's largest T (prefill: a tiled GEMM), then the
 * remaining tokens with the microkernel of their count (tail); decode (one
 * token) is a GEMV, fn[1] per group. */
static void gemm_task(void *ctx, int i, int n) {
    matmul_job *job = ctx;
    const ev_weights *W = job->W;
    const ev_microkernels *mk = &W->v->mk[W->kind];
    const int64_t T = mk->max_t;
    int64_t g0, g1;
    ev_task_range(W->n_groups, i, n, &g0, &g1);
    for (int64_t g = g0; g < g1; g++) {
        int64_t t = 0;
        for (; t + T <= job->n; t += T) mk->fn[T](W, &job->A, g, t, job->Y, W->rows);
        if (t < job->n) mk->fn[job->n - t](W, &job->A, g, t, job->Y, W->rows);
    }
}

/* Tasks per thread: >1 so a thread slowed by another process does not hold
 * up the op (tasks are handed out dynamically). */
#define EV_TASKS_PER_THREAD 4

/* At least this many multiply-adds per task: a smaller op runs on fewer
 * threads (down to the caller alone), since waking a worker costs
 * microseconds and, when other processes share the cores, a woken worker
 * may wait a whole scheduler tick before it runs. */
#define EV_MIN_MACS_PER_TASK 65536

static int64_t tasks_for(int64_t want, int64_t macs) {
    int64_t by_work = (macs + EV_MIN_MACS_PER_TASK - 1) / EV_MIN_MACS_PER_TASK;
    return want < by_work ? want : (by_work > 0 ? by_work : 1);
}

int ev_matmul(ev_threadpool *tp, const ev_weights *W, const float *X, int64_t n, float *Y) {
    matmul_job job;
    void *heap = NULL;
    int n_threads = ev_threadpool_n_threads(tp);
    int64_t tasks;
    if (!W || !X || !Y || n < 0) return EV_KERNEL_EINVAL;
    if (n == 0) return EV_KERNEL_OK;
    memset(&job, 0, sizeof job);
    job.W = W;
    job.A.x = X;
    job.n = n;
    job.Y = Y;
    if (is_quantized(W->type)) {
        /* int8 quants, then f32 scales, then int32 block sums (per 32) or
         * int16 sums per 16 (K-quants): both 8 bytes per 32 values at most */
        const int64_t nb = W->nb;
        size_t qbytes = ((size_t)(n * W->cols) + 63) & ~(size_t)63;
        size_t bytes = qbytes + (size_t)(n * W->cols / EV_QK) * 8;
        char *buf = ev_threadpool_scratch(tp, bytes);
        if (!buf) buf = heap = alloc64(bytes);
        if (!buf) return EV_KERNEL_ENOMEM;
        job.q = (int8_t *)buf;
        job.d = (float *)(buf + qbytes);
        if (ev_is_kquant(W->type)) job.bs = (int16_t *)(buf + qbytes + (size_t)(n * nb) * 4);
        else job.s = (int32_t *)(buf + qbytes + (size_t)(n * nb) * 4);
        job.A.q = job.q;
        job.A.d = job.d;
        job.A.s = job.s;
        job.A.bs = job.bs;
        ev_threadpool_run(tp, quantize_task, &job, (int)tasks_for(n < n_threads ? n : n_threads, n * W->cols));
    }
    tasks = (int64_t)n_threads * EV_TASKS_PER_THREAD;
    if (n_threads == 1) tasks = 1;
    if (tasks > W->n_groups) tasks = W->n_groups;
    tasks = tasks_for(tasks, n * W->rows * W->cols);
    ev_threadpool_run(tp, gemm_task, &job, (int)tasks);
    free(heap);
    return EV_KERNEL_OK;
}

void ev_silu_mul(const float *g, const float *u, float *out, int64_t n) { current_variant()->silu_mul(g, u, out, n); }

void ev_quantize_rows_q8(const float *x, int64_t n, int64_t cols, int8_t *q, float *d, int32_t *s) {
    const ev_kernel_variant *v = current_variant();
    for (int64_t t = 0; t < n; t++)
        v->quantize(x + t * cols, cols, q + t * cols, d + t * (cols / EV_QK), s + t * (cols / EV_QK));
}

void ev_quantize_rows_q8k(const float *x, int64_t n, int64_t cols, int8_t *q, float *d, int16_t *bs) {
    const ev_kernel_variant *v = current_variant();
    for (int64_t t = 0; t < n; t++)
        v->quantize_k(x + t * cols, cols, q + t * cols, d + t * (cols / EV_QK_K), bs + t * (cols / 16));
}

/* K-quant rows to f32 with gguf-py's (gguf.quants) arithmetic, bit for bit:
 * per sub-block dl = d * sc and ml = dmin * m in f32, then dl * q - ml, two
 * separately rounded operations (this file is built with -ffp-contract=off
 * so no FMA fuses them). */
static void dequantize_k(ev_type t, const uint8_t *p, float *out, int64_t cols) {
    const int64_t bb = ev_type_info(t)->bytes;
    for (int64_t b = 0; b < cols / EV_QK_K; b++, p += bb, out += EV_QK_K) {
        uint16_t h;
        if (t == EV_TYPE_Q6_K) {
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            memcpy(&h, p + 208, 2);
            const float d = ev_fp16_to_fp32(h);
            for (int i = 0; i < EV_QK_K; i++) {
                /* element i: half n = i / 128, quarter c = (i / 32) % 4, l = i % 32 */
                int n = i / 128, c = (i / 32) % 4, l = i % 32;
                int lo = (ql[64 * n + 32 * (c & 1) + l] >> (4 * (c >> 1))) & 0x0f;
                int hi = (qh[32 * n + l] >> (2 * c)) & 3;
                float dl = d * (float)sc[i / 16];
                out[i] = dl * (float)((lo | hi << 4) - 32);
            }
            continue;
        }
        uint8_t sc[8], m[8];
        memcpy(&h, p, 2);
        const float d = ev_fp16_to_fp32(h);
        memcpy(&h, p + 2, 2);
        const float dmin = ev_fp16_to_fp32(h);
        unpack_scales_k4(p + 4, sc, m);
        const uint8_t *qh = t == EV_TYPE_Q5_K ? p + 16 : NULL, *qs = p + (qh ? 48 : 16);
        for (int i = 0; i < EV_QK_K; i++) {
            /* sub-block j = i / 32: nibble j % 2 of qs[32 (j / 2) + l], fifth bit j of qh[l] */
            int j = i / 32, l = i % 32;
            int q = (qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 0x0f;
            if (qh) q |= ((qh[l] >> j) & 1) << 4;
            float dl = d * (float)sc[j], ml = dmin * (float)m[j];
            out[i] = dl * (float)q - ml;
        }
    }
}

void ev_dequantize_row(ev_type t, const void *row, float *out, int64_t cols) {
    const uint8_t *p = row;
    switch (t) {
    case EV_TYPE_F32: memcpy(out, row, (size_t)cols * 4); break;
    case EV_TYPE_F16:
        for (int64_t i = 0; i < cols; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = ev_fp16_to_fp32(h);
        }
        break;
    case EV_TYPE_Q8_0:
        for (int64_t b = 0; b < cols / EV_QK; b++, p += EV_Q8_0_BYTES) {
            uint16_t h;
            float d;
            memcpy(&h, p, 2);
            d = ev_fp16_to_fp32(h);
            for (int i = 0; i < EV_QK; i++) out[b * EV_QK + i] = (float)(int8_t)p[2 + i] * d;
        }
        break;
    case EV_TYPE_Q4_0:
        for (int64_t b = 0; b < cols / EV_QK; b++, p += EV_Q4_0_BYTES) {
            uint16_t h;
            float d;
            memcpy(&h, p, 2);
            d = ev_fp16_to_fp32(h);
            for (int i = 0; i < 16; i++) {
                out[b * EV_QK + i] = (float)((p[2 + i] & 0x0f) - 8) * d;
                out[b * EV_QK + 16 + i] = (float)((p[2 + i] >> 4) - 8) * d;
            }
        }
        break;
    case EV_TYPE_Q5_0:
        for (int64_t b = 0; b < cols / EV_QK; b++, p += EV_Q5_0_BYTES) {
            uint8_t q8[EV_Q8_0_BYTES];
            uint16_t h;
            q5_0_to_q8_0(p, q8);
            memcpy(&h, q8, 2);
            const float d = ev_fp16_to_fp32(h);
            for (int i = 0; i < EV_QK; i++) out[b * EV_QK + i] = d * (float)(int8_t)q8[2 + i];
        }
        break;
    case EV_TYPE_Q5_1:   /* gguf-py: d * q + m, two roundings (no FMA: -ffp-contract=off) */
        for (int64_t b = 0; b < cols / EV_QK; b++, p += EV_Q5_1_BYTES) {
            uint8_t q8[EV_Q8_0_BYTES];
            uint16_t h, hm = q5_1_to_q8_0(p, q8);
            memcpy(&h, q8, 2);
            const float d = ev_fp16_to_fp32(h), m = ev_fp16_to_fp32(hm);
            for (int i = 0; i < EV_QK; i++) out[b * EV_QK + i] = d * (float)(int8_t)q8[2 + i] + m;
        }
        break;
    case EV_TYPE_Q4_K: case EV_TYPE_Q5_K: case EV_TYPE_Q6_K: dequantize_k(t, p, out, cols); break;
    }
}

/* ------------------------------------------------ scalar reference (R=1) */

static void quantize_scalar(const float *x, int64_t cols, int8_t *q, float *d, int32_t *s) {
    for (int64_t b = 0; b < cols / EV_QK; b++) {
        const float *xb = x + b * EV_QK;
        float amax = 0.0f, id;
        int32_t sum = 0;
        for (int i = 0; i < EV_QK; i++) amax = fmaxf(amax, fabsf(xb[i]));
        ev_q8_scale(amax, &d[b], &id);
        for (int i = 0; i < EV_QK; i++) {
            float v = xb[i] * id; /* |v| <= 127 up to rounding */
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v == v ? v : 0.0f;
            q[b * EV_QK + i] = (int8_t)nearbyintf(v); /* round half to even, like SIMD cvt */
            sum += q[b * EV_QK + i];
        }
        s[b] = sum;
    }
}

/* Scalar microkernels: one row (R = 1) or one float group, one token. */

/* Q8_0, and Q5_1 (W->m set): plus sum(x) * (m dx) a block. */
static void q8_0_scalar_1(const ev_weights *W, const ev_acts *A, int64_t r, int64_t t, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const int8_t *wq = (const int8_t *)W->qs + (r * nb + b) * 32;
        const int8_t *xq = A->q + (t * nb + b) * 32;
        int32_t isum = 0;
        for (int i = 0; i < 32; i++) isum += (int32_t)wq[i] * xq[i];
        acc += (float)isum * (ev_fp16_to_fp32(W->d[r * nb + b]) * A->d[t * nb + b]);
        if (W->m) acc += (float)A->s[t * nb + b] * (ev_fp16_to_fp32(W->m[r * nb + b]) * A->d[t * nb + b]);
    }
    Y[t * ldy + r] = acc;
}

static void q4_0_scalar_1(const ev_weights *W, const ev_acts *A, int64_t r, int64_t t, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wq = W->qs + (r * nb + b) * 16;
        const int8_t *xq = A->q + (t * nb + b) * 32;
        int32_t isum = 0;
        for (int i = 0; i < 16; i++) {
            isum += ((int32_t)(wq[i] & 0x0f) - 8) * xq[i];
            isum += ((int32_t)(wq[i] >> 4) - 8) * xq[16 + i];
        }
        acc += (float)isum * (ev_fp16_to_fp32(W->d[r * nb + b]) * A->d[t * nb + b]);
    }
    Y[t * ldy + r] = acc;
}

/* Float weights: the rows of group g (EV_FLOAT_ROWS), each summed in column order. */
static inline void float_scalar(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, float *Y, int64_t ldy,
                                int f16) {
    const int64_t cols = W->cols;
    const float *x = A->x + t * cols;
    for (int64_t r = g * W->R; r < g * W->R + W->R && r < W->rows; r++) {
        float acc = 0.0f;
        for (int64_t i = 0; i < cols; i++) {
            float w = f16 ? ev_fp16_to_fp32(((const uint16_t *)W->qs)[r * cols + i]) : ((const float *)W->qs)[r * cols + i];
            acc += w * x[i];
        }
        Y[t * ldy + r] = acc;
    }
}

static void f32_scalar_1(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, float *Y, int64_t ldy) {
    float_scalar(W, A, g, t, Y, ldy, 0);
}

static void f16_scalar_1(const ev_weights *W, const ev_acts *A, int64_t g, int64_t t, float *Y, int64_t ldy) {
    float_scalar(W, A, g, t, Y, ldy, 1);
}

static void quantize_k_scalar(const float *x, int64_t cols, int8_t *q, float *d, int16_t *bs) {
    for (int64_t b = 0; b < cols / EV_QK_K; b++) {
        const float *xb = x + b * EV_QK_K;
        float amax = 0.0f, id;
        for (int i = 0; i < EV_QK_K; i++) amax = fmaxf(amax, fabsf(xb[i]));
        ev_q8_scale(amax, &d[b], &id);
        for (int k = 0; k < 16; k++) {
            int32_t sum = 0;
            for (int i = 16 * k; i < 16 * k + 16; i++) {
                float v = xb[i] * id;
                v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v == v ? v : 0.0f;
                q[b * EV_QK_K + i] = (int8_t)nearbyintf(v);
                sum += q[b * EV_QK_K + i];
            }
            bs[b * 16 + k] = (int16_t)sum;   /* |sum| <= 16 * 127 */
        }
    }
}

/* K-quants, R = 1: the record holds ggml's quant bytes in order, the 16
 * scale/min values in order, then d (and dmin).  Q6_K's integer part I of
 * one block: */
static int32_t q6_k_block_scalar(const uint8_t *rec, const ev_klayout *L, const int8_t *xq) {
    const uint8_t *qh = rec + L->qh, *sc = rec + L->sc;
    int32_t I = 0;
    for (int i = 0; i < EV_QK_K; i += 16) {
        int32_t dot = 0;
        for (int e = i; e < i + 16; e++) {
            int n = e / 128, c = (e / 32) % 4, l = e % 32;
            int lo = (rec[64 * n + 32 * (c & 1) + l] >> (4 * (c >> 1))) & 0x0f;
            int hi = (qh[32 * n + l] >> (2 * c)) & 3;
            dot += ((lo | hi << 4) - 32) * xq[e];
        }
        I += (int8_t)sc[i / 16] * dot;
    }
    return I;
}

static void k_scalar_1(const ev_weights *W, const ev_acts *A, int64_t r, int64_t t, float *Y, int64_t ldy) {
    const int64_t nb = W->nb;
    const ev_klayout L = ev_klayout_of(W->type);
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rec = W->qs + (r * nb + b) * L.rec, *qh = rec + L.qh, *sc = rec + L.sc;
        const int8_t *xq = A->q + (t * nb + b) * EV_QK_K;
        const int16_t *bs = A->bs + (t * nb + b) * 16;
        const float dx = A->d[t * nb + b];
        uint16_t h;
        int32_t I = 0, M = 0;
        memcpy(&h, rec + L.d, 2);
        const float d = ev_fp16_to_fp32(h);
        if (W->type == EV_TYPE_Q6_K) {
            acc += (float)q6_k_block_scalar(rec, &L, xq) * (d * dx);
            continue;
        }
        for (int j = 0; j < 8; j++) {
            int32_t dot = 0;
            for (int l = 0; l < 32; l++) {
                int q = (rec[32 * (j / 2) + l] >> (4 * (j & 1))) & 0x0f;
                if (W->type == EV_TYPE_Q5_K) q |= ((qh[l] >> j) & 1) << 4;
                dot += q * xq[32 * j + l];
            }
            I += sc[j] * dot;
            M += sc[8 + j] * (bs[2 * j] + bs[2 * j + 1]);
        }
        memcpy(&h, rec + L.d + 2, 2);
        acc += (float)I * (d * dx) - (float)M * (ev_fp16_to_fp32(h) * dx);
    }
    Y[t * ldy + r] = acc;
}

static void silu_mul_scalar(const float *g, const float *u, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* The reference: every kind one token at a time (max_t 1). */
const ev_kernel_variant ev_variant_scalar = {
    .name = "scalar",
    .interleave = 1,
    .xor_q8 = 0,
    .quantize = quantize_scalar,
    .quantize_k = quantize_k_scalar,
    .silu_mul = silu_mul_scalar,
    .mk = {
        [EV_KIND_F32] = EV_TILES1(f32_scalar),
        [EV_KIND_F16] = EV_TILES1(f16_scalar),
        [EV_KIND_Q8_0] = EV_TILES1(q8_0_scalar),
        [EV_KIND_Q4_0] = EV_TILES1(q4_0_scalar),
        [EV_KIND_Q5_1] = EV_TILES1(q8_0_scalar),
        [EV_KIND_Q4_K] = EV_TILES1(k_scalar),
        [EV_KIND_Q5_K] = EV_TILES1(k_scalar),
        [EV_KIND_Q6_K] = EV_TILES1(k_scalar),
    },
};
