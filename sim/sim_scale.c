/*
 * The simulator's SCALE encoder (see sim_scale.h): compact lengths and
 * vectors, the V0 layout the verifiers parse in ratls/dstack_attest.c.
 */

#include <stdlib.h>
#include <string.h>

#include "dstack_attest.h"
#include "dstack_hex.h"
#include "sim_scale.h"


static int
sim_scale_put_compact(u_char *p, size_t v)
{
    if (v < 64) {
        p[0] = (u_char) (v << 2);
        return 1;
    }

    if (v < 16384) {
        p[0] = (u_char) ((v << 2) | 1);
        p[1] = (u_char) (v >> 6);
        return 2;
    }

    p[0] = (u_char) ((v << 2) | 2);
    p[1] = (u_char) (v >> 6);
    p[2] = (u_char) (v >> 14);
    p[3] = (u_char) (v >> 22);

    return 4;
}


static u_char *
sim_scale_put_vec(u_char *p, const void *data, size_t n)
{
    p += sim_scale_put_compact(p, n);
    memcpy(p, data, n);

    return p + n;
}


int
sim_scale_build_v0(const u_char *template_quote, size_t len,
    const u_char *spki_der, size_t spki_len, const char *app_id_hex,
    const char *instance_id_hex, const char *compose_hash_hex,
    u_char **out, size_t *out_len)
{
    size_t           i, size, hlen;
    u_char          *buf, *p, *quote;
    u_char           rtmr3[48], digest[48], ids[3][64];
    const char      *err, *hex[3];
    dstack_quote_t   q;
    dstack_attest_t  tmp;
    dstack_event_t   ev[3];

    static const char  *names[3] = { "app-id", "compose-hash", "instance-id" };

    hex[0] = app_id_hex;
    hex[1] = compose_hash_hex;
    hex[2] = instance_id_hex;

    if (dstack_attest_parse_quote(template_quote, len, &q, &err) != 0) {
        return -1;
    }

    for (i = 0; i < 3; i++) {
        hlen = hex[i] != NULL ? strlen(hex[i]) : 0;

        if (hlen == 0 || dstack_hex_decode(ids[i], 64, hex[i], hlen) < 0) {
            return -1;
        }

        ev[i].name = (const u_char *) names[i];
        ev[i].name_len = strlen(names[i]);
        ev[i].payload = ids[i];
        ev[i].payload_len = hlen / 2;
        ev[i].digest_version = 1;
    }

    dstack_attest_init(&tmp);

    if (dstack_attest_set_binding(&tmp, spki_der, spki_len, NULL) != 0) {
        return -1;
    }

    dstack_attest_replay(ev, 3, rtmr3);

    /* header, quote, two event lists, report_data, "{}" */
    size = 2 + 4 + q.len + 1 + 3 * (8 + 1 + 48 + 1 + 16 + 1 + 64)
           + 1 + 3 * (1 + 16 + 1 + 64) + 64 + 1 + 2;

    buf = malloc(size);

    if (buf == NULL) {
        return -1;
    }

    p = buf;
    *p++ = 0x00;
    *p++ = 0x00;

    p += sim_scale_put_compact(p, q.len);
    quote = p;
    memcpy(quote, q.data, q.len);
    memcpy(quote + (q.report_data - q.data), tmp.expected_rd, 64);
    memcpy(quote + (q.rtmr[3] - q.data), rtmr3, 48);
    p += q.len;

    p += sim_scale_put_compact(p, 3);

    for (i = 0; i < 3; i++) {
        p[0] = 3;
        p[1] = 0;
        p[2] = 0;
        p[3] = 0;
        p[4] = DSTACK_RUNTIME_EVENT_TYPE & 0xff;
        p[5] = (DSTACK_RUNTIME_EVENT_TYPE >> 8) & 0xff;
        p[6] = (DSTACK_RUNTIME_EVENT_TYPE >> 16) & 0xff;
        p[7] = (DSTACK_RUNTIME_EVENT_TYPE >> 24) & 0xff;
        p += 8;

        dstack_attest_event_digest(&ev[i], digest);
        p = sim_scale_put_vec(p, digest, 48);
        p = sim_scale_put_vec(p, ev[i].name, ev[i].name_len);
        p = sim_scale_put_vec(p, ev[i].payload, ev[i].payload_len);
    }

    p += sim_scale_put_compact(p, 3);

    for (i = 0; i < 3; i++) {
        p = sim_scale_put_vec(p, ev[i].name, ev[i].name_len);
        p = sim_scale_put_vec(p, ev[i].payload, ev[i].payload_len);
    }

    memcpy(p, tmp.expected_rd, 64);
    p += 64;
    p = sim_scale_put_vec(p, "{}", 2);

    *out = buf;
    *out_len = (size_t) (p - buf);

    return 0;
}
