/* edgevlm-run: generate text with an LFM2 GGUF on a device without Python.
 *
 *   edgevlm-run MODEL.gguf [-p TEXT | -i ID,ID,...] [-n N] [-t THREADS] [-c N_CTX]
 *               [--temp T] [--top-k K] [--top-p P] [--seed S]
 *
 * The text prompt is tokenized by greedy longest match over the GGUF vocab
 * (tokenizer.ggml.tokens), with GPT-2 byte-level or SentencePiece space
 * handling by tokenizer.ggml.model: simple, and not identical to the real
 * BPE merges, so pass -i with ids from the model's tokenizer for exact
 * prompts.  Prints the generated tokens as they come, then timings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgevlm.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(void) {
    fprintf(stderr,
            "usage: edgevlm-run MODEL.gguf [-p TEXT | -i ID,ID,...] [-n N] [-t THREADS] [-c N_CTX]\n"
            "                   [--temp T] [--top-k K] [--top-p P] [--seed S]\n");
}

/* ---- GPT-2 byte-level alphabet ------------------------------------------- */

/* GPT-2 maps each byte to a printable code point: printable Latin-1 bytes map
 * to themselves, the others to 256, 257, ... in byte order. */
static unsigned byte_to_cp(unsigned b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) n++;
    return 256 + n;
}

static int put_utf8(unsigned cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xc0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    out[0] = (char)(0xe0 | cp >> 12); out[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

/* Text as it appears in the vocab: byte-level for "gpt2", "▁" for spaces for
 * "llama" (SentencePiece), unchanged otherwise.  Caller frees. */
static char *to_vocab_alphabet(const char *text, const char *tok_model, size_t *out_len) {
    size_t n = strlen(text);
    char *out = malloc(n * 3 + 4), *p = out;
    if (!out) return NULL;
    int gpt2 = strcmp(tok_model, "gpt2") == 0, spm = strcmp(tok_model, "llama") == 0;
    if (spm) p += put_utf8(0x2581, p);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (gpt2) p += put_utf8(byte_to_cp(c), p);
        else if (spm && c == ' ') p += put_utf8(0x2581, p);
        else *p++ = (char)c;
    }
    *out_len = (size_t)(p - out);
    return out;
}

/* Print a vocab entry as text (undoing the byte-level alphabet). */
static void print_token(const ev_model *m, int32_t id) {
    size_t len;
    const char *t = ev_model_token_text(m, id, &len);
    if (!t) { printf("[%d]", id); return; }
    int gpt2 = strcmp(ev_model_tokenizer(m), "gpt2") == 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)t[i];
        unsigned cp = c;
        int k = 1;
        if (c >= 0xe0 && i + 2 < len) { cp = (c & 0x0fu) << 12 | (t[i + 1] & 0x3fu) << 6 | (t[i + 2] & 0x3fu); k = 3; }
        else if (c >= 0xc0 && i + 1 < len) { cp = (c & 0x1fu) << 6 | (t[i + 1] & 0x3fu); k = 2; }
        if (cp == 0x2581) { putchar(' '); i += (size_t)k; continue; }
        if (gpt2) {
            int found = 0;
            for (unsigned b = 0; b < 256 && !found; b++)
                if (byte_to_cp(b) == cp) { putchar((int)b); found = 1; }
            if (found) { i += (size_t)k; continue; }
        }
        fwrite(t + i, 1, (size_t)k, stdout);
        i += (size_t)k;
    }
}

/* ---- greedy longest-match tokenizer --------------------------------------- */

typedef struct { const char *s; size_t len; int32_t id; } vocab_entry;

static int cmp_entry(const void *a, const void *b) {
    const vocab_entry *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->s, y->s, n);
    return r ? r : (x->len < y->len ? -1 : x->len > y->len);
}

static int tokenize(const ev_model *m, const char *text, int32_t **ids_out, int *n_out) {
    int nv = ev_model_n_vocab(m), ne = 0;
    size_t max_len = 0;
    vocab_entry *v = malloc(sizeof *v * (size_t)nv);
    if (!v) return 0;
    for (int32_t i = 0; i < nv; i++) {
        size_t len;
        const char *t = ev_model_token_text(m, i, &len);
        if (!t || len == 0) continue;
        v[ne].s = t; v[ne].len = len; v[ne].id = i;
        if (len > max_len) max_len = len;
        ne++;
    }
    if (ne == 0) {
        free(v);
        fprintf(stderr, "edgevlm-run: the model has no vocab; pass token ids with -i\n");
        return 0;
    }
    qsort(v, (size_t)ne, sizeof *v, cmp_entry);
    size_t len;
    char *s = to_vocab_alphabet(text, ev_model_tokenizer(m), &len);
    int32_t *ids = malloc(sizeof(int32_t) * (len + 1));
    int n = 0, ok = s && ids;
    int32_t bos = ev_model_bos_token(m);
    if (ok && bos >= 0) ids[n++] = bos;
    for (size_t i = 0; ok && i < len;) {
        size_t best = 0;
        int32_t best_id = -1;
        for (size_t l = (len - i < max_len ? len - i : max_len); l > 0 && best_id < 0; l--) {
            vocab_entry key = {s + i, l, 0};
            vocab_entry *hit = bsearch(&key, v, (size_t)ne, sizeof *v, cmp_entry);
            if (hit) { best = l; best_id = hit->id; }
        }
        if (best_id < 0) {
            fprintf(stderr, "edgevlm-run: no vocab entry matches the prompt at byte %zu; pass token ids with -i\n", i);
            ok = 0;
            break;
        }
        ids[n++] = best_id;
        i += best;
    }
    free(s);
    free(v);
    if (!ok) { free(ids); return 0; }
    *ids_out = ids;
    *n_out = n;
    return 1;
}

static int parse_ids(const char *arg, int32_t **ids_out, int *n_out) {
    size_t cap = strlen(arg) / 2 + 2;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    int n = 0;
    const char *p = arg;
    while (ids && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || (*end && *end != ',')) { free(ids); return 0; }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    if (!ids || n == 0) { free(ids); return 0; }
    *ids_out = ids;
    *n_out = n;
    return 1;
}

typedef struct {
    const char *path, *text, *id_arg;
    int n_gen, threads, n_ctx;
    ev_sampler_opts so;
} run_args;

/* The command line in *a; 0 when it is not a valid one (the caller prints the usage). */
static int parse_args(int argc, char **argv, run_args *a) {
    *a = (run_args){.n_gen = 32, .threads = 2, .so = ev_sampler_default_opts()};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(arg, "-p") && val) a->text = val;
        else if (!strcmp(arg, "-i") && val) a->id_arg = val;
        else if (!strcmp(arg, "-n") && val) a->n_gen = atoi(val);
        else if (!strcmp(arg, "-t") && val) a->threads = atoi(val);
        else if (!strcmp(arg, "-c") && val) a->n_ctx = atoi(val);
        else if (!strcmp(arg, "--temp") && val) a->so.temperature = (float)atof(val);
        else if (!strcmp(arg, "--top-k") && val) a->so.top_k = atoi(val);
        else if (!strcmp(arg, "--top-p") && val) a->so.top_p = (float)atof(val);
        else if (!strcmp(arg, "--seed") && val) a->so.seed = strtoull(val, NULL, 10);
        else if (arg[0] != '-' && !a->path) { a->path = arg; takes = 0; }
        else return 0;
        i += takes;
    }
    return a->path && (a->text || a->id_arg) && a->n_gen >= 0;
}

/* Generate up to n_gen tokens after the prefill, printing each as it comes; *n_done: tokens generated.
 * Returns 0, or 1 after printing the error that stopped generation. */
static int generate(ev_model *m, ev_session *s, ev_sampler *smp, int n_gen, int *n_done) {
    ev_error err;
    for (*n_done = 0; *n_done < n_gen; (*n_done)++) {
        int32_t tok;
        int done;
        if (ev_generate_next(s, smp, ev_model_eos_token(m), &tok, &done, &err)) {
            fprintf(stderr, "\nedgevlm-run: %s\n", err.message);
            return 1;
        }
        if (done) break;
        if (ev_model_token_type(m, tok) == 3) continue;   /* control token (e.g. <|im_end|>): not text */
        if (ev_model_token_text(m, tok, NULL)) print_token(m, tok);
        else printf("%d ", tok);
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv) {
    run_args a;
    if (!parse_args(argc, argv, &a)) { usage(); return 2; }

    ev_error err;
    ev_model *m = NULL;
    double t0 = now_s();
    if (ev_model_load(a.path, &m, &err)) {
        fprintf(stderr, "edgevlm-run: %s\n", err.message);
        return 2;
    }
    double t_load = now_s() - t0;
    int32_t *ids = NULL;
    int n_prompt = 0;
    if (!(a.id_arg ? parse_ids(a.id_arg, &ids, &n_prompt) : tokenize(m, a.text, &ids, &n_prompt))) {
        if (a.id_arg) fprintf(stderr, "edgevlm-run: -i wants comma-separated token ids, e.g. -i 1,4093,504\n");
        ev_model_free(m);
        return 2;
    }
    ev_session_opts o = ev_session_default_opts();
    o.n_ctx = a.n_ctx > 0 ? a.n_ctx : n_prompt + a.n_gen + 1;
    o.n_threads = a.threads;
    ev_session *s = NULL;
    ev_sampler *smp = ev_sampler_new(&a.so);
    int rc = 0, n_done = 0;
    double t_pp = 0, t_tg = 0;
    if (!smp || ev_session_new(m, &o, &s, &err)) {
        fprintf(stderr, "edgevlm-run: %s\n", smp ? err.message : "out of memory");
        rc = 2;
        goto out;
    }
    t0 = now_s();
    if (ev_prefill(s, ids, n_prompt, NULL, &err)) {
        fprintf(stderr, "edgevlm-run: %s\n", err.message);
        rc = 2;
        goto out;
    }
    t_pp = now_s() - t0;
    t0 = now_s();
    rc = generate(m, s, smp, a.n_gen, &n_done);
    t_tg = now_s() - t0;
    printf("\n");
    fprintf(stderr, "load %.1f ms | prompt %d tokens %.1f ms (%.1f t/s) | generated %d tokens %.1f ms (%.1f t/s) | %d threads\n",
            t_load * 1e3, n_prompt, t_pp * 1e3, t_pp > 0 ? n_prompt / t_pp : 0.0, n_done, t_tg * 1e3,
            t_tg > 0 ? n_done / t_tg : 0.0, a.threads);
out:
    free(ids);
    ev_sampler_free(smp);
    ev_session_free(s);
    ev_model_free(m);
    return rc;
}
