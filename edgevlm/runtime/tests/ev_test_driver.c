/* Small C driver for the runtime's tests (run under the sanitizers too):
 *   ev_test_driver load FILE...        load each file; print "<file> <status name>"
 *   ev_test_driver decode FILE N T     prefill 3 tokens, then N steps sampled at
 *                                      temperature T (top-k 8, top-p 0.9, seed 1);
 *                                      print the token ids
 * Exit status: 0 when every call behaved (a load error is a behaviour), 1 on
 * a decode failure, 2 on bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgevlm.h"

static int cmd_load(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        ev_model *m = NULL;
        ev_error err;
        ev_status st = ev_model_load(argv[i], &m, &err);
        printf("%s %s%s%s\n", argv[i], ev_status_name(st), st ? " " : "", st ? err.message : "");
        ev_model_free(m);
    }
    return 0;
}

static int cmd_decode(const char *path, int n, float temperature) {
    ev_model *m = NULL;
    ev_session *s = NULL;
    ev_sampler *smp = NULL;
    float *logits = NULL;
    ev_error err = {EV_OK, ""};
    int rc = 1;
    if (ev_model_load(path, &m, &err)) goto out;
    ev_session_opts o = ev_session_default_opts();
    o.n_ctx = n + 8;
    o.n_threads = 2;
    if (ev_session_new(m, &o, &s, &err)) goto out;
    logits = malloc(sizeof(float) * (size_t)ev_model_n_vocab(m));
    ev_sampler_opts so = {temperature, 8, 0.9f, 1};
    smp = ev_sampler_new(&so);
    if (!logits || !smp) goto out;
    int32_t prompt[3] = {1, 2 % ev_model_n_vocab(m), 3 % ev_model_n_vocab(m)};
    if (ev_prefill(s, prompt, 3, logits, &err)) goto out;
    for (int i = 0; i < n; i++) {
        int32_t tok;
        int done;
        if (ev_generate_next(s, smp, -1, &tok, &done, &err)) goto out;
        printf("%d%c", tok, i + 1 < n ? ' ' : '\n');
    }
    /* an over-long step must fail cleanly with CONTEXT_FULL */
    int32_t many[16] = {0};
    if (ev_prefill(s, many, 16, NULL, &err) != EV_ERR_CONTEXT_FULL) {
        fprintf(stderr, "expected EV_ERR_CONTEXT_FULL\n");
        goto out;
    }
    rc = 0;
out:
    if (rc) fprintf(stderr, "decode failed: %s %s\n", ev_status_name(err.code), err.message);
    free(logits);
    ev_sampler_free(smp);
    ev_session_free(s);
    ev_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "load") == 0) return cmd_load(argc - 2, argv + 2);
    if (argc == 5 && strcmp(argv[1], "decode") == 0) return cmd_decode(argv[2], atoi(argv[3]), (float)atof(argv[4]));
    fprintf(stderr, "usage: ev_test_driver load FILE... | decode FILE N TEMPERATURE\n");
    return 2;
}
