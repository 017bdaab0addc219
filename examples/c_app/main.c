/* vlm_answer: answer a question about an image with the edgevlm C runtime.
 *
 *   vlm_answer LLM.gguf INPUTS.bin [-n MAX_NEW_TOKENS] [-t THREADS]
 *
 * LLM.gguf is a build's language model (BUILD_DIR/llm.gguf); INPUTS.bin holds
 * the image embeddings and the prompt's token ids, written by
 * examples/write_inputs.py (format below).  The program runs
 *
 *     <bos>  image embeddings [n_image, n_embd]  prompt ids
 *
 * through the model, generates greedily until <eos> or MAX_NEW_TOKENS, and
 * prints the answer's token ids, its text (from the GGUF's vocab) and timings:
 *
 *     tokens: 7 26 18
 *     answer: a orange diamond
 *     load 1.2 ms | prefill 9 tokens 0.3 ms | decode 3 tokens 0.2 ms (15000.0 tokens/s) | 1 threads
 *
 * Only edgevlm.h is used.  Exit status: 0 on success, 2 on bad arguments or
 * a bad model or inputs file (one line on stderr naming the cause), 1 when
 * the runtime fails while generating.
 *
 * INPUTS.bin, all little-endian:
 *
 *     offset  size                  field
 *     0       4                     magic "EVIN"
 *     4       4                     u32 version = 1
 *     8       4                     u32 n_image   image tokens, 1..4096
 *     12      4                     u32 hidden    embedding width = the model's n_embd, 1..16384
 *     16      4                     u32 n_prompt  prompt token ids after the image, 0..65536
 *     20      4 * n_image * hidden  f32 image embeddings, row-major
 *     ...     4 * n_prompt          i32 prompt token ids
 *
 * and nothing after the ids.
 */
#define _POSIX_C_SOURCE 200809L  /* clock_gettime */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgevlm.h"

#define MAX_IMAGE 4096u
#define MAX_HIDDEN 16384u
#define MAX_PROMPT 65536u
#define HEADER_BYTES 20

typedef struct {
    uint32_t n_image, hidden, n_prompt;
    float *embeds;  /* [n_image * hidden] */
    int32_t *ids;   /* [n_prompt] */
} vlm_inputs;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Little-endian u32 from 4 bytes, whatever this CPU's byte order. */
static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Read `count` little-endian 32-bit words into dst (float or int32 storage).
 * Returns 0 when the file ends first. */
static int read_words(FILE *f, void *dst, size_t count) {
    unsigned char buf[4096];
    unsigned char *out = dst;
    while (count > 0) {
        size_t n = count < sizeof buf / 4 ? count : sizeof buf / 4;
        if (fread(buf, 4, n, f) != n) return 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t w = le32(buf + 4 * i);
            memcpy(out + 4 * i, &w, 4);
        }
        out += 4 * n;
        count -= n;
    }
    return 1;
}

static void free_inputs(vlm_inputs *in) {
    free(in->embeds);
    free(in->ids);
    memset(in, 0, sizeof *in);
}

/* Read and check INPUTS.bin.  On failure print one line and return 0. */
static int read_inputs(const char *path, vlm_inputs *in) {
    unsigned char h[HEADER_BYTES];
    memset(in, 0, sizeof *in);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "vlm_answer: cannot open inputs '%s'\n", path);
        return 0;
    }
    const char *problem = NULL;
    size_t got = fread(h, 1, sizeof h, f);
    if (got != sizeof h) problem = "truncated header";
    else if (memcmp(h, "EVIN", 4) != 0) problem = "bad magic (not an inputs file from write_inputs.py)";
    else if (le32(h + 4) != 1) problem = "unsupported version (this program reads version 1)";
    if (!problem) {
        in->n_image = le32(h + 8);
        in->hidden = le32(h + 12);
        in->n_prompt = le32(h + 16);
        if (in->n_image < 1 || in->n_image > MAX_IMAGE) problem = "n_image outside 1..4096";
        else if (in->hidden < 1 || in->hidden > MAX_HIDDEN) problem = "hidden outside 1..16384";
        else if (in->n_prompt > MAX_PROMPT) problem = "n_prompt outside 0..65536";
    }
    if (!problem) {  /* the limits above keep these sizes far from overflow */
        size_t n_embeds = (size_t)in->n_image * in->hidden;
        in->embeds = malloc(sizeof(float) * n_embeds);
        in->ids = malloc(sizeof(int32_t) * (in->n_prompt ? in->n_prompt : 1));
        if (!in->embeds || !in->ids) problem = "out of memory";
        else if (!read_words(f, in->embeds, n_embeds) || !read_words(f, in->ids, in->n_prompt))
            problem = "truncated: the file is shorter than its header says";
        else if (fgetc(f) != EOF) problem = "trailing bytes after the prompt ids";
    }
    fclose(f);
    if (problem) {
        fprintf(stderr, "vlm_answer: inputs '%s': %s\n", path, problem);
        free_inputs(in);
        return 0;
    }
    return 1;
}

/* Check the inputs against the model they are for. */
static int check_inputs(const vlm_inputs *in, const ev_model *m, const char *path) {
    if ((int)in->hidden != ev_model_n_embd(m)) {
        fprintf(stderr, "vlm_answer: inputs '%s' have hidden %u but the model's n_embd is %d "
                        "(write them with the same build)\n", path, in->hidden, ev_model_n_embd(m));
        return 0;
    }
    for (size_t i = 0; i < (size_t)in->n_image * in->hidden; i++) {
        if (!isfinite(in->embeds[i])) {
            fprintf(stderr, "vlm_answer: inputs '%s': image embedding %zu is not finite\n", path, i);
            return 0;
        }
    }
    for (uint32_t i = 0; i < in->n_prompt; i++) {
        if (in->ids[i] < 0 || in->ids[i] >= ev_model_n_vocab(m)) {
            fprintf(stderr, "vlm_answer: inputs '%s': prompt id %d at position %u is outside [0, %d)\n",
                    path, in->ids[i], i, ev_model_n_vocab(m));
            return 0;
        }
    }
    if (ev_model_bos_token(m) < 0 || ev_model_eos_token(m) < 0) {
        fprintf(stderr, "vlm_answer: the model has no <bos>/<eos> token ids in its GGUF\n");
        return 0;
    }
    return 1;
}

/* Print one token as text.  Word-level vocabs (tokenizer "none") are joined
 * by spaces; byte-level ("gpt2") and SentencePiece ("llama") vocabs mark a
 * leading space as "Ġ" or "▁", printed here as a space.  Control tokens
 * (GGUF token type 3, e.g. "<pad>") are not text and are skipped, as the
 * Python runner's text drops them. */
static void print_token(const ev_model *m, int32_t id, int first) {
    size_t len;
    const char *t = ev_model_token_text(m, id, &len);
    if (ev_model_token_type(m, id) == 3) return;
    if (!t) {
        printf("%s[%d]", first ? "" : " ", id);
        return;
    }
    if (strcmp(ev_model_tokenizer(m), "none") == 0 && !first) putchar(' ');
    for (size_t i = 0; i < len; i++) {
        if (i + 1 < len && !memcmp(t + i, "\xc4\xa0", 2)) { putchar(' '); i += 1; }           /* Ġ */
        else if (i + 2 < len && !memcmp(t + i, "\xe2\x96\x81", 3)) { putchar(' '); i += 2; } /* ▁ */
        else putchar(t[i]);
    }
}

static void usage(void) {
    fprintf(stderr, "usage: vlm_answer LLM.gguf INPUTS.bin [-n MAX_NEW_TOKENS] [-t THREADS]\n");
}

/* Positive int from a command-line value, or 0 when it is not one. */
static int parse_count(const char *s) {
    char *end;
    long v = strtol(s, &end, 10);
    return (end != s && *end == '\0' && v > 0 && v <= 1 << 20) ? (int)v : 0;
}

/* The command line's GGUF, inputs file, -n and -t; 0 when it is not a valid one (the caller prints the usage). */
static int parse_args(int argc, char **argv, const char **gguf, const char **inputs_path, int *max_new, int *threads) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            if (!(*max_new = parse_count(argv[++i]))) return 0;
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            if (!(*threads = parse_count(argv[++i]))) return 0;
        } else if (argv[i][0] != '-' && !*gguf) *gguf = argv[i];
        else if (argv[i][0] != '-' && !*inputs_path) *inputs_path = argv[i];
        else return 0;
    }
    return *gguf && *inputs_path;
}

/* Greedy tokens after the prefill into answer[0 .. *n_new), at most max_new; 0 after printing a decode error. */
static int decode(ev_model *m, ev_session *s, ev_sampler *smp, int max_new, int32_t *answer, int *n_new) {
    ev_error err;
    while (*n_new < max_new) {
        int32_t tok;
        int done;
        if (ev_generate_next(s, smp, ev_model_eos_token(m), &tok, &done, &err) != EV_OK) {
            fprintf(stderr, "vlm_answer: decode: %s\n", err.message);
            return 0;
        }
        if (done) break;
        answer[(*n_new)++] = tok;
    }
    return 1;
}

int main(int argc, char **argv) {
    const char *gguf = NULL, *inputs_path = NULL;
    int max_new = 24, threads = 1;
    if (!parse_args(argc, argv, &gguf, &inputs_path, &max_new, &threads)) { usage(); return 2; }

    ev_error err;
    ev_model *m = NULL;
    double t0 = now_ms();
    if (ev_model_load(gguf, &m, &err) != EV_OK) {
        fprintf(stderr, "vlm_answer: %s\n", err.message);
        return 2;
    }
    double load_ms = now_ms() - t0;
    vlm_inputs in;
    if (!read_inputs(inputs_path, &in)) { ev_model_free(m); return 2; }
    if (!check_inputs(&in, m, inputs_path)) { free_inputs(&in); ev_model_free(m); return 2; }

    int n_prompt = 1 + (int)in.n_image + (int)in.n_prompt;
    ev_session_opts so = ev_session_default_opts();
    so.n_ctx = n_prompt + max_new;
    so.n_threads = threads;
    ev_session *s = NULL;
    ev_sampler_opts sampler_opts = ev_sampler_default_opts();  /* greedy */
    ev_sampler *smp = ev_sampler_new(&sampler_opts);
    int32_t *answer = malloc(sizeof(int32_t) * (size_t)max_new);
    int rc = 1, n_new = 0;
    if (!smp || !answer) {
        fprintf(stderr, "vlm_answer: out of memory\n");
        goto out;
    }
    if (ev_session_new(m, &so, &s, &err) != EV_OK) {
        fprintf(stderr, "vlm_answer: %s\n", err.message);
        goto out;
    }

    /* <bos>, then the image as embeddings, then the prompt as ids. */
    int32_t bos = ev_model_bos_token(m);
    t0 = now_ms();
    if (ev_prefill(s, &bos, 1, NULL, &err) != EV_OK ||
        ev_prefill_embeds(s, in.embeds, (int)in.n_image, NULL, &err) != EV_OK ||
        (in.n_prompt > 0 && ev_prefill(s, in.ids, (int)in.n_prompt, NULL, &err) != EV_OK)) {
        fprintf(stderr, "vlm_answer: prefill: %s\n", err.message);
        goto out;
    }
    double prefill_ms = now_ms() - t0;

    t0 = now_ms();
    if (!decode(m, s, smp, max_new, answer, &n_new)) goto out;
    double decode_ms = now_ms() - t0;

    printf("tokens:");
    for (int i = 0; i < n_new; i++) printf(" %d", answer[i]);
    printf("\nanswer: ");
    for (int i = 0; i < n_new; i++) print_token(m, answer[i], i == 0);
    printf("\nload %.1f ms | prefill %d tokens %.2f ms | decode %d tokens %.2f ms (%.1f tokens/s) | %d threads\n",
           load_ms, n_prompt, prefill_ms, n_new, decode_ms, decode_ms > 0 ? n_new / (decode_ms * 1e-3) : 0.0,
           threads);
    rc = 0;
out:
    free(answer);
    ev_sampler_free(smp);
    ev_session_free(s);
    free_inputs(&in);
    ev_model_free(m);
    return rc;
}
