/* types.c - the type table of types.h. */
#include "types.h"

#include <stdio.h>

static const struct { uint32_t id; ev_type_traits tr; } table[] = {
    {EV_TYPE_F32, {"F32", 1, 4}},
    {EV_TYPE_F16, {"F16", 1, 2}},
    {EV_TYPE_Q4_0, {"Q4_0", EV_QK, EV_Q4_0_BYTES}},
    {EV_TYPE_Q5_0, {"Q5_0", EV_QK, EV_Q5_0_BYTES}},
    {EV_TYPE_Q5_1, {"Q5_1", EV_QK, EV_Q5_1_BYTES}},
    {EV_TYPE_Q8_0, {"Q8_0", EV_QK, EV_Q8_0_BYTES}},
    {EV_TYPE_Q4_K, {"Q4_K", EV_QK_K, EV_Q4_K_BYTES}},
    {EV_TYPE_Q5_K, {"Q5_K", EV_QK_K, EV_Q5_K_BYTES}},
    {EV_TYPE_Q6_K, {"Q6_K", EV_QK_K, EV_Q6_K_BYTES}},
};

const ev_type_traits *ev_type_info(uint32_t t) {
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].id == t) return &table[i].tr;
    return NULL;
}

uint64_t ev_type_row_bytes(uint32_t t, int64_t cols) {
    const ev_type_traits *tr = ev_type_info(t);
    if (!tr || cols < 0 || cols % tr->block) return 0;
    return (uint64_t)(cols / tr->block) * (uint64_t)tr->bytes;
}

const char *ev_type_list(char *buf, size_t n) {
    size_t used = 0;
    if (!n) return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof table / sizeof table[0] && used < n; i++) {
        int k = snprintf(buf + used, n - used, "%s%s (%u)", i ? ", " : "", table[i].tr.name, (unsigned)table[i].id);
        if (k < 0) break;
        used += (size_t)k;
    }
    return buf;
}
