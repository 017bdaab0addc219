/* GGUF v3 reader.  Layout (little-endian):
 *   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x (string key | u32 type | value)
 *   n_tensors x (string name | u32 n_dims | n_dims x u64 ne | u32 type | u64 offset)
 *   padding to general.alignment | tensor data
 * Every read goes through a cursor that knows the file size, so a bad count or
 * length is reported (with the field and file offset) instead of read past. */
#define _DEFAULT_SOURCE   /* madvise (glibc's posix_madvise ignores DONTNEED) */
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "types.h"

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#define GGUF_MAX_NAME 64            /* ggml's GGML_MAX_NAME, NUL included */
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct {
    const uint8_t *base;
    size_t size, pos;
    ev_error *err;
} cursor;

static ev_status need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return ev_fail(c->err, EV_ERR_TRUNCATED,
                       "gguf: truncated: %s needs %llu bytes at offset %zu, file has %zu",
                       what, (unsigned long long)n, c->pos, c->size);
    return EV_OK;
}

static ev_status rd(cursor *c, void *dst, size_t n, const char *what) {
    ev_status st = need(c, n, what);
    if (st) return st;
    memcpy(dst, c->base + c->pos, n);   /* memcpy: the file gives no alignment */
    c->pos += n;
    return EV_OK;
}

static ev_status rd_u32(cursor *c, uint32_t *v, const char *what) { return rd(c, v, 4, what); }
static ev_status rd_u64(cursor *c, uint64_t *v, const char *what) { return rd(c, v, 8, what); }

static ev_status rd_str(cursor *c, ev_str *s, const char *what) {
    uint64_t len;
    ev_status st = rd_u64(c, &len, what);
    if (st) return st;
    if (len > c->size - c->pos)
        return ev_fail(c->err, EV_ERR_BAD_STRING,
                       "gguf: %s length %llu at offset %zu runs past the end of the file (%zu bytes)",
                       what, (unsigned long long)len, c->pos - 8, c->size);
    s->ptr = (const char *)c->base + c->pos;
    s->len = len;
    c->pos += (size_t)len;
    return EV_OK;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
    case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
    case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
    case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
    default: return 0;
    }
}

static void decode_scalar(ev_gguf_kv *kv, const uint8_t *p) {
    switch (kv->type) {
    case GGUF_T_UINT8: kv->num.u = p[0]; break;
    case GGUF_T_BOOL: kv->num.u = p[0] != 0; break;
    case GGUF_T_INT8: kv->num.i = (int8_t)p[0]; break;
    case GGUF_T_UINT16: { uint16_t v; memcpy(&v, p, 2); kv->num.u = v; } break;
    case GGUF_T_INT16: { int16_t v; memcpy(&v, p, 2); kv->num.i = v; } break;
    case GGUF_T_UINT32: { uint32_t v; memcpy(&v, p, 4); kv->num.u = v; } break;
    case GGUF_T_INT32: { int32_t v; memcpy(&v, p, 4); kv->num.i = v; } break;
    case GGUF_T_FLOAT32: { float v; memcpy(&v, p, 4); kv->num.f = v; } break;
    case GGUF_T_UINT64: memcpy(&kv->num.u, p, 8); break;
    case GGUF_T_INT64: memcpy(&kv->num.i, p, 8); break;
    case GGUF_T_FLOAT64: memcpy(&kv->num.f, p, 8); break;
    }
}

static ev_status read_kv(cursor *c, ev_gguf_kv *kv, uint64_t idx) {
    ev_status st;
    char pb[68];
    if ((st = rd_str(c, &kv->key, "metadata key"))) return st;
    if ((st = rd_u32(c, &kv->type, "metadata value type"))) return st;
    if (kv->type >= GGUF_T_COUNT)
        return ev_fail(c->err, EV_ERR_BAD_KV_TYPE, "gguf: metadata #%llu '%s' has unknown value type %u",
                       (unsigned long long)idx, ev_printable(kv->key, pb), kv->type);
    if (kv->type == GGUF_T_STRING) return rd_str(c, &kv->str, "metadata string value");
    if (kv->type != GGUF_T_ARRAY) {
        size_t n = scalar_size(kv->type);
        if ((st = need(c, n, "metadata value"))) return st;
        decode_scalar(kv, c->base + c->pos);
        c->pos += n;
        return EV_OK;
    }
    if ((st = rd_u32(c, &kv->arr_type, "array element type"))) return st;
    if ((st = rd_u64(c, &kv->arr_count, "array count"))) return st;
    kv->arr_data = c->base + c->pos;
    if (kv->arr_type == GGUF_T_STRING) {
        /* each element is at least its 8-byte length */
        if (kv->arr_count > (c->size - c->pos) / 8)
            return ev_fail(c->err, EV_ERR_BAD_COUNT, "gguf: string array '%s' count %llu exceeds the file size",
                           ev_printable(kv->key, pb), (unsigned long long)kv->arr_count);
        for (uint64_t i = 0; i < kv->arr_count; i++) {
            ev_str s;
            if ((st = rd_str(c, &s, "array string element"))) return st;
        }
        return EV_OK;
    }
    size_t es = scalar_size(kv->arr_type);
    if (es == 0)
        return ev_fail(c->err, EV_ERR_BAD_KV_TYPE, "gguf: array '%s' has element type %u (nested or unknown)",
                       ev_printable(kv->key, pb), kv->arr_type);
    if (kv->arr_count > (c->size - c->pos) / es)
        return ev_fail(c->err, EV_ERR_BAD_COUNT, "gguf: array '%s' count %llu exceeds the file size",
                       ev_printable(kv->key, pb), (unsigned long long)kv->arr_count);
    c->pos += (size_t)(kv->arr_count * es);
    return EV_OK;
}

static ev_status read_tensor_info(cursor *c, ev_gguf_tensor *t, uint64_t idx) {
    ev_status st;
    if ((st = rd_str(c, &t->name, "tensor name"))) return st;
    if (t->name.len >= GGUF_MAX_NAME)
        return ev_fail(c->err, EV_ERR_BAD_STRING, "gguf: tensor #%llu name is %llu bytes (limit %d)",
                       (unsigned long long)idx, (unsigned long long)t->name.len, GGUF_MAX_NAME - 1);
    char pb[68];
    const char *nm = ev_printable(t->name, pb);
    if ((st = rd_u32(c, &t->n_dims, "tensor n_dims"))) return st;
    if (t->n_dims < 1 || t->n_dims > 4)
        return ev_fail(c->err, EV_ERR_BAD_SHAPE, "gguf: tensor '%s' has %u dims (1..4 allowed)",
                       nm, t->n_dims);
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;
        if ((st = rd_u64(c, &ne, "tensor dim"))) return st;
        if (ne > (uint64_t)INT64_MAX || (ne != 0 && nelem > (uint64_t)INT64_MAX / ne))
            return ev_fail(c->err, EV_ERR_BAD_SHAPE, "gguf: tensor '%s' shape overflows (dim %u = %llu)",
                           nm, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        nelem *= ne;
    }
    if ((st = rd_u32(c, &t->type, "tensor type"))) return st;
    if (!ev_type_info(t->type)) {
        char types[160];
        return ev_fail(c->err, EV_ERR_BAD_TENSOR_TYPE, "gguf: tensor '%s' has ggml type %u; the runtime reads %s",
                       nm, t->type, ev_type_list(types, sizeof types));
    }
    if ((st = rd_u64(c, &t->offset, "tensor offset"))) return st;
    uint64_t row = ev_type_row_bytes(t->type, t->ne[0]);   /* the one type table (types.c) */
    if (row == 0 && t->ne[0] != 0)
        return ev_fail(c->err, EV_ERR_BAD_SHAPE, "gguf: tensor '%s' row of %lld is not a multiple of the block size",
                       nm, (long long)t->ne[0]);
    uint64_t rows = t->ne[0] ? nelem / (uint64_t)t->ne[0] : 0;
    if (rows != 0 && row > UINT64_MAX / rows)
        return ev_fail(c->err, EV_ERR_BAD_SHAPE, "gguf: tensor '%s' byte size overflows", nm);
    t->nbytes = row * rows;
    return EV_OK;
}

static int cmp_offset(const void *a, const void *b) {
    const ev_gguf_tensor *x = *(const ev_gguf_tensor *const *)a, *y = *(const ev_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int str_eq2(ev_str a, ev_str b) { return a.len == b.len && memcmp(a.ptr, b.ptr, (size_t)a.len) == 0; }

const char *ev_printable(ev_str s, char *buf) {
    uint64_t n = s.len > 64 ? 64 : s.len;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        buf[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (s.len > 64) memcpy(buf + n, "...", 3), n += 3;
    buf[n] = '\0';
    return buf;
}

int ev_str_eq(ev_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

static ev_status check_tensors(ev_gguf *g, ev_error *err) {
    uint64_t data_size = g->size - g->data_offset;
    ev_gguf_tensor **order = NULL;
    ev_status st = EV_OK;
    char pb[68];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        ev_gguf_tensor *t = &g->tensors[i];
        const char *nm = ev_printable(t->name, pb);
        if (t->offset % g->alignment)
            return ev_fail(err, EV_ERR_MISALIGNED, "gguf: tensor '%s' offset %llu is not a multiple of alignment %llu",
                           nm, (unsigned long long)t->offset, (unsigned long long)g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return ev_fail(err, EV_ERR_BAD_OFFSET,
                           "gguf: tensor '%s' data [%llu, +%llu) runs past the end of the data section (%llu bytes)",
                           nm, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                           (unsigned long long)data_size);
        t->data = g->base + g->data_offset + t->offset;
    }
    if (g->n_tensors < 2) return EV_OK;
    order = malloc((size_t)g->n_tensors * sizeof *order);
    if (!order) return ev_fail(err, EV_ERR_NOMEM, "gguf: out of memory sorting %llu tensors", (unsigned long long)g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, (size_t)g->n_tensors, sizeof *order, cmp_offset);
    char pa[68];
    for (uint64_t i = 0; i + 1 < g->n_tensors && !st; i++) {
        const ev_gguf_tensor *a = order[i], *b = order[i + 1];
        if (a->offset + a->nbytes > b->offset)
            st = ev_fail(err, EV_ERR_OVERLAP, "gguf: tensors '%s' and '%s' overlap in the data section",
                         ev_printable(a->name, pa), ev_printable(b->name, pb));
    }
    free(order);
    return st;
}

/* Quadratic duplicate check would be too slow for large files: sort names. */
static int cmp_str(const void *a, const void *b) {
    const ev_str *x = *(const ev_str *const *)a, *y = *(const ev_str *const *)b;
    uint64_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->ptr, y->ptr, (size_t)n);
    return r ? r : (x->len < y->len ? -1 : x->len > y->len);
}

static ev_status check_unique(ev_str **names, uint64_t n, const char *what, ev_error *err) {
    char pb[68];
    if (n < 2) return EV_OK;
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (uint64_t i = 0; i + 1 < n; i++)
        if (str_eq2(*names[i], *names[i + 1]))
            return ev_fail(err, EV_ERR_DUPLICATE, "gguf: %s '%s' appears twice", what, ev_printable(*names[i], pb));
    return EV_OK;
}

static ev_status check_duplicates(ev_gguf *g, ev_error *err) {
    uint64_t n = g->n_kv > g->n_tensors ? g->n_kv : g->n_tensors;
    if (n < 2) return EV_OK;
    ev_str **names = malloc((size_t)n * sizeof *names);
    if (!names) return ev_fail(err, EV_ERR_NOMEM, "gguf: out of memory checking names");
    for (uint64_t i = 0; i < g->n_kv; i++) names[i] = &g->kv[i].key;
    ev_status st = check_unique(names, g->n_kv, "metadata key", err);
    if (!st) {
        for (uint64_t i = 0; i < g->n_tensors; i++) names[i] = &g->tensors[i].name;
        st = check_unique(names, g->n_tensors, "tensor name", err);
    }
    free(names);
    return st;
}

ev_status ev_gguf_parse(ev_gguf *g, const uint8_t *base, size_t size, ev_error *err) {
    cursor c = {base, size, 0, err};
    uint32_t magic;
    ev_status st;
    memset(g, 0, sizeof *g);
    g->base = base;
    g->size = size;
    if (size < 4 || memcmp(base, "GGUF", 4) != 0)
        return ev_fail(err, EV_ERR_BAD_MAGIC, "gguf: not a GGUF file (magic bytes are not 'GGUF')");
    if ((st = rd_u32(&c, &magic, "magic"))) return st;
    if ((st = rd_u32(&c, &g->version, "version"))) return st;
    if (g->version != 3)
        return ev_fail(err, EV_ERR_BAD_VERSION, "gguf: version %u; the runtime reads GGUF version 3", g->version);
    if ((st = rd_u64(&c, &g->n_tensors, "tensor count"))) return st;
    if ((st = rd_u64(&c, &g->n_kv, "metadata count"))) return st;
    /* Smallest possible entries: kv = 8 (key len) + 4 (type) + 1 (u8 value);
     * tensor info = 8 (name len) + 4 + 8 (one dim) + 4 + 8.  Counts beyond
     * what the remaining bytes can hold are refused before any allocation. */
    uint64_t left = size - c.pos;
    if (g->n_kv > left / 13)
        return ev_fail(err, EV_ERR_BAD_COUNT, "gguf: metadata count %llu is more than a %zu-byte file can hold",
                       (unsigned long long)g->n_kv, size);
    if (g->n_tensors > left / 32)
        return ev_fail(err, EV_ERR_BAD_COUNT, "gguf: tensor count %llu is more than a %zu-byte file can hold",
                       (unsigned long long)g->n_tensors, size);
    g->kv = calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) {
        st = ev_fail(err, EV_ERR_NOMEM, "gguf: out of memory for %llu tensors / %llu keys",
                     (unsigned long long)g->n_tensors, (unsigned long long)g->n_kv);
        goto fail;
    }
    for (uint64_t i = 0; i < g->n_kv; i++)
        if ((st = read_kv(&c, &g->kv[i], i))) goto fail;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const ev_gguf_kv *al = ev_gguf_find_kv(g, "general.alignment");
    if (al) {
        if (al->type != GGUF_T_UINT32 || al->num.u == 0 || (al->num.u & (al->num.u - 1))) {
            st = ev_fail(err, EV_ERR_MISALIGNED, "gguf: general.alignment must be a u32 power of two");
            goto fail;
        }
        g->alignment = al->num.u;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if ((st = read_tensor_info(&c, &g->tensors[i], i))) goto fail;
    if ((st = check_duplicates(g, err))) goto fail;
    g->data_offset = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (g->data_offset > size) {
        if (g->n_tensors == 0) g->data_offset = size;
        else {
            st = ev_fail(err, EV_ERR_TRUNCATED, "gguf: file ends before the tensor data section (offset %llu)",
                         (unsigned long long)g->data_offset);
            goto fail;
        }
    }
    if ((st = check_tensors(g, err))) goto fail;
    return EV_OK;
fail:
    free(g->kv);
    free(g->tensors);
    g->kv = NULL;
    g->tensors = NULL;
    return st;
}

ev_status ev_gguf_open(ev_gguf *g, const char *path, ev_error *err) {
    memset(g, 0, sizeof *g);
#if !defined(_WIN32)
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ev_fail(err, EV_ERR_IO, "cannot open '%s'", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ev_fail(err, EV_ERR_IO, "'%s' is not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {   /* 32-bit hosts */
        close(fd);
        return ev_fail(err, EV_ERR_IO, "'%s' is too large to map on this platform", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) {
        close(fd);
        return ev_fail(err, EV_ERR_BAD_MAGIC, "gguf: '%s' is empty", path);
    }
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return ev_fail(err, EV_ERR_IO, "cannot map '%s' (%zu bytes)", path, size);
    ev_status st = ev_gguf_parse(g, m, size, err);
    if (st) {
        munmap(m, size);
        memset(g, 0, sizeof *g);
        return st;
    }
    g->mapped = 1;
    return EV_OK;
#else
    (void)path;
    return ev_fail(err, EV_ERR_IO, "gguf: mmap is not available on this platform");
#endif
}

void ev_gguf_close(ev_gguf *g) {
    if (!g) return;
#if !defined(_WIN32)
    if (g->mapped && g->base) munmap((void *)g->base, g->size);
#endif
    free(g->kv);
    free(g->tensors);
    memset(g, 0, sizeof *g);
}

void ev_gguf_release(const ev_gguf *g, const void *data, uint64_t nbytes) {
#if !defined(_WIN32) && defined(MADV_DONTNEED)
    long page = sysconf(_SC_PAGESIZE);
    if (!g->mapped || page <= 0) return;
    uintptr_t lo = ((uintptr_t)data + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    uintptr_t hi = ((uintptr_t)data + (uintptr_t)nbytes) / (uintptr_t)page * (uintptr_t)page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);   /* advisory: failure is harmless */
#else
    (void)g; (void)data; (void)nbytes;
#endif
}

const ev_gguf_kv *ev_gguf_find_kv(const ev_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (ev_str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const ev_gguf_tensor *ev_gguf_find_tensor(const ev_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (ev_str_eq(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

ev_status ev_gguf_str_array(const ev_gguf_kv *kv, ev_str *out, uint64_t count, ev_error *err) {
    char pb[68];
    if (kv->type != GGUF_T_ARRAY || kv->arr_type != GGUF_T_STRING || count > kv->arr_count)
        return ev_fail(err, EV_ERR_BAD_KEY, "gguf: '%s' is not a string array of %llu entries",
                       ev_printable(kv->key, pb), (unsigned long long)count);
    const uint8_t *p = kv->arr_data;
    for (uint64_t i = 0; i < count; i++) {   /* lengths were bounds-checked by read_kv */
        uint64_t len;
        memcpy(&len, p, 8);
        out[i].ptr = (const char *)p + 8;
        out[i].len = len;
        p += 8 + len;
    }
    return EV_OK;
}
