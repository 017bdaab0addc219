/* threadpool.h - persistent pthread pool for the runtime's parallel ops.
 *
 * Threads are created once (at session creation) and woken per op: workers
 * spin briefly on a generation counter, then sleep on a condition variable,
 * so back-to-back ops in a token cost no thread creation and no syscall.
 * The calling thread takes part as worker 0; n_threads = 1 runs inline. */
#ifndef EV_THREADPOOL_H
#define EV_THREADPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct ev_threadpool ev_threadpool;

/* A pool of n_threads (>= 1) threads counting the caller; NULL on failure. */
ev_threadpool *ev_threadpool_create(int n_threads);
void ev_threadpool_free(ev_threadpool *tp);
int ev_threadpool_n_threads(const ev_threadpool *tp);

/* Run fn(ctx, i, n) for every i in [0, n) across the pool's threads (tasks
 * are handed out dynamically); returns when all are done.  tp may be NULL
 * (runs inline).  Not re-entrant: one op at a time per pool. */
void ev_threadpool_run(ev_threadpool *tp, void (*fn)(void *ctx, int i, int n), void *ctx, int n);

/* Contiguous share [*lo, *hi) of `count` items for task i of n. */
static inline void ev_task_range(int64_t count, int i, int n, int64_t *lo, int64_t *hi) {
    *lo = count * i / n;
    *hi = count * (i + 1) / n;
}

/* Scratch memory owned by the pool, at least `bytes` long and 64-byte
 * aligned, valid until the next call; grown on demand so steady-state ops do
 * not allocate.  NULL if tp is NULL or allocation fails. */
void *ev_threadpool_scratch(ev_threadpool *tp, size_t bytes);

#endif /* EV_THREADPOOL_H */
