/* Error reporting shared by the runtime's C files. */
#ifndef EV_ERROR_H
#define EV_ERROR_H

#include "edgevlm.h"

/* Fill err (when not NULL) with code and a printf-style message; returns code
 * so that callers can write `return ev_fail(err, EV_ERR_IO, "...", ...);`. */
ev_status ev_fail(ev_error *err, ev_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Reset err to EV_OK with an empty message. */
void ev_clear(ev_error *err);

#endif
