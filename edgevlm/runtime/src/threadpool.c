/* threadpool.c - persistent pthread pool: spin-then-sleep wake-up per op.
 *
 * A decode step runs ~100 small parallel ops; waking threads through a
 * condition variable costs several microseconds each, so workers first spin
 * on a generation counter for a short while and only then sleep.  Shared
 * state uses the GCC/Clang __atomic builtins (the library is C99).
 *
 * An op never waits for a worker that has not started: tasks are claimed
 * from one packed word (op generation | task count | next task) by
 * compare-and-swap, and the caller, which claims too, waits only until
 * every task is done.  A worker the OS has not scheduled yet (another
 * process holds the core) simply misses the op instead of stalling it for a
 * scheduler tick; it sees the generation moved on and claims nothing. */
#define _GNU_SOURCE
#include "threadpool.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EV_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define EV_CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define EV_CPU_RELAX() ((void)0)
#endif

/* How long a thread spins before sleeping: long enough to bridge the gap
 * between two ops of one token, short enough not to burn a core while the
 * application (or another process sharing the cores) needs it. */
#define EV_SPIN_NS 200000LL

struct ev_threadpool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    /* current op */
    void (*fn)(void *ctx, int i, int n);
    void *ctx;
    uint64_t work;      /* atomic: PACK(generation, n_tasks, next task to claim) */
    int done_tasks;     /* atomic: tasks of the current op finished */
    unsigned generation;/* atomic: bumped once per op (the wake-up signal) */
    int sleeping;       /* atomic: workers waiting on `wake` */
    int caller_waiting; /* atomic: the caller waits on `done` */
    int stop;           /* atomic */
    void *scratch;
    size_t scratch_bytes;
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* work word: generation (24 bits) | n_tasks (20 bits) | next task (20 bits) */
#define EV_TASK_BITS 20
#define EV_TASK_MASK ((1ULL << EV_TASK_BITS) - 1)
#define EV_GEN_MASK 0xFFFFFFULL
#define PACK(g, n, i) ((((uint64_t)(g) & EV_GEN_MASK) << (2 * EV_TASK_BITS)) | ((uint64_t)(n) << EV_TASK_BITS) | (uint64_t)(i))
#define W_GEN(w) ((unsigned)((w) >> (2 * EV_TASK_BITS)))
#define W_N(w) ((int)(((w) >> EV_TASK_BITS) & EV_TASK_MASK))
#define W_NEXT(w) ((int)((w) & EV_TASK_MASK))

/* Claim and run tasks of op `gen` until none is left (or a newer op began). */
static void run_tasks(ev_threadpool *tp, unsigned gen) {
    uint64_t w = __atomic_load_n(&tp->work, __ATOMIC_ACQUIRE);
    for (;;) {
        if (W_GEN(w) != (gen & EV_GEN_MASK) || W_NEXT(w) >= W_N(w)) return;
        if (!__atomic_compare_exchange_n(&tp->work, &w, w + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
        /* Task W_NEXT(w) of op `gen` is ours; the op cannot finish before it
         * does, so fn and ctx are still this op's. */
        tp->fn(tp->ctx, W_NEXT(w), W_N(w));
        /* seq_cst pairs with the caller's store of caller_waiting */
        if (__atomic_add_fetch(&tp->done_tasks, 1, __ATOMIC_SEQ_CST) == W_N(w) &&
            __atomic_load_n(&tp->caller_waiting, __ATOMIC_SEQ_CST)) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_broadcast(&tp->done);
            pthread_mutex_unlock(&tp->mu);
        }
        w = __atomic_load_n(&tp->work, __ATOMIC_ACQUIRE);
    }
}

/* Wait until tp->generation != seen (or stop); returns the new generation. */
static unsigned wait_for_work(ev_threadpool *tp, unsigned seen) {
    int64_t deadline = now_ns() + EV_SPIN_NS;
    unsigned g;
    for (int spins = 0;; spins++) {
        g = __atomic_load_n(&tp->generation, __ATOMIC_ACQUIRE);
        if (g != seen || __atomic_load_n(&tp->stop, __ATOMIC_ACQUIRE)) return g;
        EV_CPU_RELAX();
        if ((spins & 255) == 255 && now_ns() > deadline) break;
    }
    pthread_mutex_lock(&tp->mu);
    __atomic_add_fetch(&tp->sleeping, 1, __ATOMIC_SEQ_CST);
    while ((g = __atomic_load_n(&tp->generation, __ATOMIC_SEQ_CST)) == seen &&
           !__atomic_load_n(&tp->stop, __ATOMIC_SEQ_CST))
        pthread_cond_wait(&tp->wake, &tp->mu);
    __atomic_sub_fetch(&tp->sleeping, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&tp->mu);
    return g;
}

static void *worker_main(void *arg) {
    ev_threadpool *tp = arg;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_work(tp, seen);
        if (__atomic_load_n(&tp->stop, __ATOMIC_ACQUIRE)) return NULL;
        run_tasks(tp, seen);
    }
}

static void wake_all(ev_threadpool *tp) {
    if (__atomic_load_n(&tp->sleeping, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->wake);
        pthread_mutex_unlock(&tp->mu);
    }
}

ev_threadpool *ev_threadpool_create(int n_threads) {
    ev_threadpool *tp;
    int i;
    if (n_threads < 1 || n_threads > 1024) return NULL;
    tp = calloc(1, sizeof *tp);
    if (!tp) return NULL;
    tp->n_threads = n_threads;
    if (pthread_mutex_init(&tp->mu, NULL)) { free(tp); return NULL; }
    if (pthread_cond_init(&tp->wake, NULL)) { pthread_mutex_destroy(&tp->mu); free(tp); return NULL; }
    if (pthread_cond_init(&tp->done, NULL)) {
        pthread_cond_destroy(&tp->wake);
        pthread_mutex_destroy(&tp->mu);
        free(tp);
        return NULL;
    }
    if (n_threads > 1) {
        tp->threads = calloc((size_t)n_threads - 1, sizeof *tp->threads);
        if (!tp->threads) { ev_threadpool_free(tp); return NULL; }
        for (i = 0; i < n_threads - 1; i++) {
            if (pthread_create(&tp->threads[i], NULL, worker_main, tp)) {
                tp->n_threads = i + 1; /* join only the threads that exist */
                ev_threadpool_free(tp);
                return NULL;
            }
        }
    }
    return tp;
}

void ev_threadpool_free(ev_threadpool *tp) {
    int i;
    if (!tp) return;
    __atomic_store_n(&tp->stop, 1, __ATOMIC_SEQ_CST);
    if (tp->threads) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->wake);
        pthread_mutex_unlock(&tp->mu);
        for (i = 0; i < tp->n_threads - 1; i++) pthread_join(tp->threads[i], NULL);
        free(tp->threads);
    }
    pthread_cond_destroy(&tp->wake);
    pthread_cond_destroy(&tp->done);
    pthread_mutex_destroy(&tp->mu);
    free(tp->scratch);
    free(tp);
}

int ev_threadpool_n_threads(const ev_threadpool *tp) { return tp ? tp->n_threads : 1; }

/* Wait until all n tasks of the current op are done: spin, then sleep.
 * Only tasks already claimed (by running threads) can be outstanding. */
static void wait_done(ev_threadpool *tp, int n) {
    int64_t deadline = now_ns() + EV_SPIN_NS;
    for (int spins = 0; __atomic_load_n(&tp->done_tasks, __ATOMIC_ACQUIRE) < n; spins++) {
        EV_CPU_RELAX();
        if ((spins & 255) == 255 && now_ns() > deadline) break;
    }
    if (__atomic_load_n(&tp->done_tasks, __ATOMIC_ACQUIRE) >= n) return;
    pthread_mutex_lock(&tp->mu);
    __atomic_store_n(&tp->caller_waiting, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&tp->done_tasks, __ATOMIC_SEQ_CST) < n) pthread_cond_wait(&tp->done, &tp->mu);
    __atomic_store_n(&tp->caller_waiting, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&tp->mu);
}

void ev_threadpool_run(ev_threadpool *tp, void (*fn)(void *ctx, int i, int n), void *ctx, int n) {
    int i;
    unsigned gen;
    if (n <= 0) return;
    if (!tp || tp->n_threads == 1 || n == 1 || (uint64_t)n > EV_TASK_MASK) {
        for (i = 0; i < n; i++) fn(ctx, i, n);
        return;
    }
    tp->fn = fn;
    tp->ctx = ctx;
    __atomic_store_n(&tp->done_tasks, 0, __ATOMIC_RELAXED);
    gen = __atomic_load_n(&tp->generation, __ATOMIC_RELAXED) + 1;  /* only this thread writes it */
    __atomic_store_n(&tp->work, PACK(gen, n, 0), __ATOMIC_RELEASE);
    /* seq_cst store pairs with the seq_cst `sleeping` increment in
     * wait_for_work: either the worker sees the new generation or we see it
     * sleeping and broadcast. */
    __atomic_store_n(&tp->generation, gen, __ATOMIC_SEQ_CST);
    wake_all(tp);
    run_tasks(tp, gen);
    wait_done(tp, n);
}

void *ev_threadpool_scratch(ev_threadpool *tp, size_t bytes) {
    if (!tp) return NULL;
    if (bytes > tp->scratch_bytes) {
        void *p = NULL;
        size_t size = (bytes + 63) & ~(size_t)63;
        if (posix_memalign(&p, 64, size)) return NULL;
        free(tp->scratch);
        tp->scratch = p;
        tp->scratch_bytes = size;
    }
    return tp->scratch;
}
