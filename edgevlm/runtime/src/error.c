/* Error codes and messages: the caller owns the ev_error, so reporting is
 * thread-safe and nothing is global. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

ev_status ev_fail(ev_error *err, ev_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void ev_clear(ev_error *err) {
    if (err) {
        err->code = EV_OK;
        err->message[0] = '\0';
    }
}

const char *ev_status_name(ev_status code) {
    switch (code) {
    case EV_OK: return "EV_OK";
    case EV_ERR_INVALID_ARG: return "EV_ERR_INVALID_ARG";
    case EV_ERR_NOMEM: return "EV_ERR_NOMEM";
    case EV_ERR_IO: return "EV_ERR_IO";
    case EV_ERR_BAD_MAGIC: return "EV_ERR_BAD_MAGIC";
    case EV_ERR_BAD_VERSION: return "EV_ERR_BAD_VERSION";
    case EV_ERR_TRUNCATED: return "EV_ERR_TRUNCATED";
    case EV_ERR_BAD_COUNT: return "EV_ERR_BAD_COUNT";
    case EV_ERR_BAD_STRING: return "EV_ERR_BAD_STRING";
    case EV_ERR_BAD_KV_TYPE: return "EV_ERR_BAD_KV_TYPE";
    case EV_ERR_BAD_TENSOR_TYPE: return "EV_ERR_BAD_TENSOR_TYPE";
    case EV_ERR_BAD_SHAPE: return "EV_ERR_BAD_SHAPE";
    case EV_ERR_BAD_OFFSET: return "EV_ERR_BAD_OFFSET";
    case EV_ERR_MISALIGNED: return "EV_ERR_MISALIGNED";
    case EV_ERR_OVERLAP: return "EV_ERR_OVERLAP";
    case EV_ERR_DUPLICATE: return "EV_ERR_DUPLICATE";
    case EV_ERR_UNSUPPORTED_ARCH: return "EV_ERR_UNSUPPORTED_ARCH";
    case EV_ERR_MISSING_KEY: return "EV_ERR_MISSING_KEY";
    case EV_ERR_BAD_KEY: return "EV_ERR_BAD_KEY";
    case EV_ERR_MISSING_TENSOR: return "EV_ERR_MISSING_TENSOR";
    case EV_ERR_TENSOR_SHAPE: return "EV_ERR_TENSOR_SHAPE";
    case EV_ERR_CONTEXT_FULL: return "EV_ERR_CONTEXT_FULL";
    case EV_ERR_INTERNAL: return "EV_ERR_INTERNAL";
    }
    return "EV_ERR_UNKNOWN";
}
