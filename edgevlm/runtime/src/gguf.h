/* A hardened reader of GGUF v3 files: every count, length, offset and shape
 * read from the file is checked against the file's size before use. */
#ifndef EV_GGUF_H
#define EV_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "edgevlm.h"

/* GGUF metadata value types (gguf spec). */
enum {
    GGUF_T_UINT8 = 0, GGUF_T_INT8 = 1, GGUF_T_UINT16 = 2, GGUF_T_INT16 = 3,
    GGUF_T_UINT32 = 4, GGUF_T_INT32 = 5, GGUF_T_FLOAT32 = 6, GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8, GGUF_T_ARRAY = 9, GGUF_T_UINT64 = 10, GGUF_T_INT64 = 11,
    GGUF_T_FLOAT64 = 12, GGUF_T_COUNT
};

/* A string inside the mapped file: not NUL-terminated. */
typedef struct {
    const char *ptr;
    uint64_t len;
} ev_str;

typedef struct {
    ev_str key;
    uint32_t type;          /* GGUF_T_* */
    /* scalar value (for GGUF_T_STRING: str) */
    union { uint64_t u; int64_t i; double f; } num;
    ev_str str;
    /* GGUF_T_ARRAY: element type, count, and where the elements start. For
     * string arrays the elements are length-prefixed and were validated. */
    uint32_t arr_type;
    uint64_t arr_count;
    const uint8_t *arr_data;
} ev_gguf_kv;

typedef struct {
    ev_str name;
    uint32_t n_dims;
    int64_t ne[4];          /* ne[0] is the innermost (row) dimension */
    uint32_t type;          /* ggml type id, one of types.h */
    uint64_t offset;        /* relative to the data section */
    uint64_t nbytes;
    const void *data;       /* inside the mapped file */
} ev_gguf_tensor;

typedef struct {
    const uint8_t *base;    /* whole file, read-only */
    size_t size;
    int mapped;             /* 1: base is an mmap, 0: a malloc'd copy */
    uint32_t version;
    uint64_t n_kv, n_tensors;
    ev_gguf_kv *kv;
    ev_gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;
} ev_gguf;

/* Parse and validate a file already in memory (base, size); base must stay
 * valid while g is used.  On error, g holds nothing that needs freeing. */
ev_status ev_gguf_parse(ev_gguf *g, const uint8_t *base, size_t size, ev_error *err);
/* Map (or read) path and parse it. */
ev_status ev_gguf_open(ev_gguf *g, const char *path, ev_error *err);
void ev_gguf_close(ev_gguf *g);

/* Tell the OS the mapped pages wholly inside [data, data + nbytes) are no
 * longer needed (their contents were copied), so they do not count twice in
 * resident memory.  Reading them again later stays valid (re-read from file). */
void ev_gguf_release(const ev_gguf *g, const void *data, uint64_t nbytes);

const ev_gguf_kv *ev_gguf_find_kv(const ev_gguf *g, const char *key);
const ev_gguf_tensor *ev_gguf_find_tensor(const ev_gguf *g, const char *name);
int ev_str_eq(ev_str s, const char *c);

/* A file string made safe for messages: at most 64 bytes, bytes outside
 * printable ASCII replaced by '?'.  Returns buf (at least 68 bytes). */
const char *ev_printable(ev_str s, char *buf);

/* The first count elements of a (validated) string array. */
ev_status ev_gguf_str_array(const ev_gguf_kv *kv, ev_str *out, uint64_t count, ev_error *err);

#endif
