/*
 * Parsers for the attestation a dstack RA-TLS certificate carries: TDX
 * quotes v4/v5, the `.8` blob (V0 SCALE, V1 MessagePack), the legacy
 * `.1`/`.2` pair, and the RTMR3 replay of dstack's runtime events
 * (see dstack_attest.h and docs/attestation.md).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <jansson.h>

#include "dstack_attest.h"
#include "dstack_hex.h"
#include "dstack_ratls.h"


#define DSTACK_QUOTE_HEADER_LEN     48
#define DSTACK_TD10_LEN             584
#define DSTACK_TD15_LEN             648
#define DSTACK_ENCLAVE_REPORT_LEN   384
#define DSTACK_TEE_TDX              0x81
#define DSTACK_MP_MAX_DEPTH         16


typedef struct {
    const u_char      *p;
    const u_char      *end;
} dstack_rd_t;


typedef struct {
    const u_char      *p;
    const u_char      *end;
    dstack_attest_t   *att;
} dstack_mp_t;


static uint16_t dstack_le16(const u_char *p);
static uint32_t dstack_le32(const u_char *p);
static void dstack_attest_reset(dstack_attest_t *att);
static u_char *dstack_arena_alloc(dstack_attest_t *att, size_t n);
static int dstack_rd_compact(dstack_rd_t *rd, uint64_t *v);
static int dstack_rd_vec(dstack_rd_t *rd, const u_char **p, size_t *n);
static int dstack_attest_parse_v0(const u_char *data, size_t len,
    dstack_attest_t *att, const char **err);
static int dstack_attest_use_quote(dstack_attest_t *att, const u_char *q,
    size_t n, const char **err);
static int dstack_mp_head(dstack_mp_t *mp, u_char *type, uint64_t *v);
static int dstack_mp_skip(dstack_mp_t *mp, unsigned depth);
static int dstack_mp_map(dstack_mp_t *mp, uint64_t *n);
static int dstack_mp_array(dstack_mp_t *mp, uint64_t *n);
static int dstack_mp_str(dstack_mp_t *mp, const u_char **s, size_t *n);
static int dstack_mp_uint(dstack_mp_t *mp, uint64_t *v);
static int dstack_mp_bytes(dstack_mp_t *mp, const u_char **s, size_t *n);
static int dstack_mp_key(const u_char *k, size_t n, const char *name);
static int dstack_attest_parse_v1(const u_char *data, size_t len,
    dstack_attest_t *att, const char **err);
static int dstack_v1_platform(dstack_mp_t *mp, dstack_attest_t *att,
    const char **err);
static int dstack_v1_stack(dstack_mp_t *mp, dstack_attest_t *att,
    const char **err);
static int dstack_v1_event(dstack_mp_t *mp, dstack_event_t *ev);


static uint16_t
dstack_le16(const u_char *p)
{
    return (uint16_t) (p[0] | (p[1] << 8));
}


static uint32_t
dstack_le32(const u_char *p)
{
    return (uint32_t) p[0] | ((uint32_t) p[1] << 8)
           | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}


void
dstack_attest_init(dstack_attest_t *att)
{
    memset(att, 0, sizeof(dstack_attest_t));
}


void
dstack_attest_free(dstack_attest_t *att)
{
    free(att->arena);
    att->arena = NULL;
    att->arena_size = 0;
    att->arena_used = 0;
}


static void
dstack_attest_reset(dstack_attest_t *att)
{
    dstack_attest_free(att);
    dstack_attest_init(att);
}


static u_char *
dstack_arena_alloc(dstack_attest_t *att, size_t n)
{
    u_char  *p;

    if (att->arena == NULL || att->arena_size - att->arena_used < n) {
        return NULL;
    }

    p = att->arena + att->arena_used;
    att->arena_used += n;

    return p;
}


int
dstack_attest_parse_quote(const u_char *data, size_t len, dstack_quote_t *q,
    const char **err)
{
    size_t         i, off, body_len, auth_len, cert_len, end, qe_end;
    const u_char  *auth, *cert;

    memset(q, 0, sizeof(dstack_quote_t));

    if (len > DSTACK_ATTEST_MAX_INPUT) {
        *err = "quote too large";
        return -1;
    }

    if (len < DSTACK_QUOTE_HEADER_LEN) {
        *err = "quote truncated in its header";
        return -1;
    }

    q->version = dstack_le16(data);
    q->att_key_type = dstack_le16(data + 2);
    q->tee_type = dstack_le32(data + 4);

    if (q->version != 4 && q->version != 5) {
        *err = q->version == 3 ? "quote version 3 (SGX) is not a TD quote"
                               : "unsupported quote version (not 4 or 5)";
        return -1;
    }

    if (q->tee_type != DSTACK_TEE_TDX) {
        *err = "quote TEE type is not TDX";
        return -1;
    }

    if (q->att_key_type != 2) {
        *err = "unsupported attestation key type (not ECDSA P-256)";
        return -1;
    }

    if (q->version == 4) {
        q->body_type = 2;
        q->report_off = DSTACK_QUOTE_HEADER_LEN;
        body_len = DSTACK_TD10_LEN;

    } else {
        if (len < DSTACK_QUOTE_HEADER_LEN + 6) {
            *err = "quote truncated in its body descriptor";
            return -1;
        }

        q->body_type = dstack_le16(data + 48);
        body_len = dstack_le32(data + 50);
        q->report_off = DSTACK_QUOTE_HEADER_LEN + 6;

        if (q->body_type == 2) {
            if (body_len != DSTACK_TD10_LEN) {
                *err = "bad TD 1.0 body size in quote v5";
                return -1;
            }

        } else if (q->body_type == 3) {
            if (body_len != DSTACK_TD15_LEN) {
                *err = "bad TD 1.5 body size in quote v5";
                return -1;
            }

        } else {
            *err = "unsupported quote v5 body type (not a TD report)";
            return -1;
        }
    }

    q->signed_len = q->report_off + body_len;

    if (len < q->signed_len + 4) {
        *err = "quote truncated in its TD report";
        return -1;
    }

    off = q->report_off;
    q->tee_tcb_svn = data + off;
    q->mr_seam = data + off + 16;
    q->mr_signer_seam = data + off + 64;
    q->seam_attributes = data + off + 112;
    q->td_attributes = data + off + 120;
    q->mr_td = data + off + 136;

    for (i = 0; i < 4; i++) {
        q->rtmr[i] = data + off + 328 + 48 * i;
    }

    q->report_data = data + off + 520;

    if (q->body_type == 3) {
        q->mr_service_td = data + off + 600;
    }

    auth_len = dstack_le32(data + q->signed_len);
    auth = data + q->signed_len + 4;

    if (auth_len > len - q->signed_len - 4) {
        *err = "quote truncated in its signature data";
        return -1;
    }

    end = q->signed_len + 4 + auth_len;

    for (i = end; i < len; i++) {
        if (data[i] != 0) {
            *err = "non-zero bytes after the quote";
            return -1;
        }
    }

    if (auth_len < 134) {
        *err = "quote signature data too short";
        return -1;
    }

    q->signature = auth;
    q->att_key = auth + 64;

    if (dstack_le16(auth + 128) != 6) {
        *err = "unsupported certification data type (not 6, QE report)";
        return -1;
    }

    cert_len = dstack_le32(auth + 130);

    if (cert_len != auth_len - 134) {
        *err = "bad certification data length in quote";
        return -1;
    }

    cert = auth + 134;

    if (cert_len < DSTACK_ENCLAVE_REPORT_LEN + 64 + 2) {
        *err = "QE report certification data truncated";
        return -1;
    }

    q->qe_report = cert;
    q->qe_report_sig = cert + DSTACK_ENCLAVE_REPORT_LEN;
    q->qe_auth_len = dstack_le16(cert + DSTACK_ENCLAVE_REPORT_LEN + 64);
    q->qe_auth = cert + DSTACK_ENCLAVE_REPORT_LEN + 64 + 2;

    qe_end = DSTACK_ENCLAVE_REPORT_LEN + 64 + 2 + q->qe_auth_len;

    if (cert_len < qe_end + 6) {
        *err = "QE authentication data truncated";
        return -1;
    }

    q->pck_cert_type = dstack_le16(cert + qe_end);
    q->pck_chain_len = dstack_le32(cert + qe_end + 2);
    q->pck_chain = cert + qe_end + 6;

    if (q->pck_chain_len != cert_len - qe_end - 6) {
        *err = "bad PCK certification data length in quote";
        return -1;
    }

    if (q->pck_cert_type != 5) {
        *err = "unsupported PCK certification data type (not 5, PEM chain)";
        return -1;
    }

    q->data = data;
    q->len = end;

    return 0;
}


static int
dstack_rd_compact(dstack_rd_t *rd, uint64_t *v)
{
    size_t    i, n;
    u_char    b;
    uint64_t  x;

    if (rd->p >= rd->end) {
        return -1;
    }

    b = rd->p[0];

    switch (b & 3) {

    case 0:
        *v = b >> 2;
        rd->p++;
        return 0;

    case 1:
        if (rd->end - rd->p < 2) {
            return -1;
        }

        *v = dstack_le16(rd->p) >> 2;
        rd->p += 2;
        return 0;

    case 2:
        if (rd->end - rd->p < 4) {
            return -1;
        }

        *v = dstack_le32(rd->p) >> 2;
        rd->p += 4;
        return 0;

    default:
        n = (b >> 2) + 4;

        if (n > 8 || (size_t) (rd->end - rd->p) < n + 1) {
            return -1;
        }

        x = 0;

        for (i = 0; i < n; i++) {
            x |= (uint64_t) rd->p[1 + i] << (8 * i);
        }

        *v = x;
        rd->p += n + 1;
        return 0;
    }
}


static int
dstack_rd_vec(dstack_rd_t *rd, const u_char **p, size_t *n)
{
    uint64_t  len;

    if (dstack_rd_compact(rd, &len) != 0
        || len > (uint64_t) (rd->end - rd->p))
    {
        return -1;
    }

    *p = rd->p;
    *n = (size_t) len;
    rd->p += len;

    return 0;
}


static int
dstack_attest_use_quote(dstack_attest_t *att, const u_char *q, size_t n,
    const char **err)
{
    return dstack_attest_parse_quote(q, n, &att->quote, err);
}


static int
dstack_attest_parse_v0(const u_char *data, size_t len, dstack_attest_t *att,
    const char **err)
{
    size_t          n, dlen, nlen, plen;
    uint32_t        imr, type;
    uint64_t        count, i;
    dstack_rd_t     rd;
    const u_char   *q, *d, *name, *payload;
    dstack_event_t  *ev;

    rd.p = data;
    rd.end = data + len;

    if (len < 2 || data[0] != 0x00) {
        *err = "not a V0 attestation";
        return -1;
    }

    if (data[1] != 0x00) {
        *err = "V0 attestation is not for dstack TDX";
        return -1;
    }

    rd.p += 2;

    if (dstack_rd_vec(&rd, &q, &n) != 0) {
        *err = "V0 attestation truncated in its quote";
        return -1;
    }

    if (dstack_attest_use_quote(att, q, n, err) != 0) {
        return -1;
    }

    /* the TDX event log: boot events and a copy of the runtime events */

    if (dstack_rd_compact(&rd, &count) != 0) {
        *err = "V0 attestation truncated in its event log";
        return -1;
    }

    for (i = 0; i < count; i++) {
        if (rd.end - rd.p < 8) {
            *err = "V0 attestation truncated in its event log";
            return -1;
        }

        imr = dstack_le32(rd.p);
        type = dstack_le32(rd.p + 4);
        rd.p += 8;

        if (dstack_rd_vec(&rd, &d, &dlen) != 0
            || dstack_rd_vec(&rd, &name, &nlen) != 0
            || dstack_rd_vec(&rd, &payload, &plen) != 0)
        {
            *err = "V0 attestation truncated in its event log";
            return -1;
        }

        if (imr != 3 || type != DSTACK_RUNTIME_EVENT_TYPE) {
            continue;
        }

        /* kept only until the runtime event list replaces them */
        if (att->nevents == DSTACK_ATTEST_MAX_EVENTS) {
            *err = "too many runtime events";
            return -1;
        }

        ev = &att->events[att->nevents++];
        ev->name = name;
        ev->name_len = nlen;
        ev->payload = payload;
        ev->payload_len = plen;
        ev->digest_version = 1;
    }

    if (dstack_rd_compact(&rd, &count) != 0) {
        *err = "V0 attestation truncated in its runtime events";
        return -1;
    }

    if (count > 0) {
        att->nevents = 0;
    }

    for (i = 0; i < count; i++) {
        if (att->nevents == DSTACK_ATTEST_MAX_EVENTS) {
            *err = "too many runtime events";
            return -1;
        }

        ev = &att->events[att->nevents];

        if (dstack_rd_vec(&rd, &ev->name, &ev->name_len) != 0
            || dstack_rd_vec(&rd, &ev->payload, &ev->payload_len) != 0)
        {
            *err = "V0 attestation truncated in its runtime events";
            return -1;
        }

        ev->digest_version = 1;
        att->nevents++;
    }

    if (rd.end - rd.p < 64) {
        *err = "V0 attestation truncated in its report_data";
        return -1;
    }

    att->report_data = rd.p;
    rd.p += 64;

    if (dstack_rd_vec(&rd, &att->config, &att->config_len) != 0) {
        *err = "V0 attestation truncated in its config";
        return -1;
    }

    if (rd.p != rd.end) {
        *err = "trailing bytes after the V0 attestation";
        return -1;
    }

    att->format = DSTACK_ATTEST_FMT_V0;

    return 0;
}


/*
 * MessagePack: a head gives the type class ('i' uint, 'n' negative or
 * other scalar, 's' str, 'b' bin, 'a' array, 'm' map, 'x' ext) and its
 * value or length; the payload of s/b/x follows.
 */
static int
dstack_mp_head(dstack_mp_t *mp, u_char *type, uint64_t *v)
{
    size_t    n, i;
    u_char    b;
    uint64_t  x;

    if (mp->p >= mp->end) {
        return -1;
    }

    b = *mp->p++;
    n = 0;

    if (b <= 0x7f) {
        *type = 'i';
        *v = b;
        return 0;
    }

    if (b >= 0xe0) {
        *type = 'n';
        *v = 0;
        return 0;
    }

    if (b >= 0x80 && b <= 0x8f) {
        *type = 'm';
        *v = b & 0x0f;
        return 0;
    }

    if (b >= 0x90 && b <= 0x9f) {
        *type = 'a';
        *v = b & 0x0f;
        return 0;
    }

    if (b >= 0xa0 && b <= 0xbf) {
        *type = 's';
        *v = b & 0x1f;
        goto check_len;
    }

    switch (b) {

    case 0xc0: case 0xc2: case 0xc3:
        *type = 'n';
        *v = 0;
        return 0;

    case 0xc4: *type = 'b'; n = 1; break;
    case 0xc5: *type = 'b'; n = 2; break;
    case 0xc6: *type = 'b'; n = 4; break;
    case 0xc7: *type = 'x'; n = 1; break;
    case 0xc8: *type = 'x'; n = 2; break;
    case 0xc9: *type = 'x'; n = 4; break;
    case 0xcc: *type = 'i'; n = 1; break;
    case 0xcd: *type = 'i'; n = 2; break;
    case 0xce: *type = 'i'; n = 4; break;
    case 0xcf: *type = 'i'; n = 8; break;
    case 0xd9: *type = 's'; n = 1; break;
    case 0xda: *type = 's'; n = 2; break;
    case 0xdb: *type = 's'; n = 4; break;
    case 0xdc: *type = 'a'; n = 2; break;
    case 0xdd: *type = 'a'; n = 4; break;
    case 0xde: *type = 'm'; n = 2; break;
    case 0xdf: *type = 'm'; n = 4; break;

    case 0xca: case 0xcb: case 0xd0: case 0xd1: case 0xd2: case 0xd3:
        /* floats and signed integers: skipped as opaque scalars */
        n = (b == 0xca) ? 4 : (b == 0xcb) ? 8 : (size_t) 1 << (b - 0xd0);

        if ((size_t) (mp->end - mp->p) < n) {
            return -1;
        }

        mp->p += n;
        *type = 'n';
        *v = 0;
        return 0;

    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        n = ((size_t) 1 << (b - 0xd4)) + 1;

        if ((size_t) (mp->end - mp->p) < n) {
            return -1;
        }

        mp->p += n;
        *type = 'n';
        *v = 0;
        return 0;

    default:
        return -1;
    }

    if ((size_t) (mp->end - mp->p) < n) {
        return -1;
    }

    x = 0;

    for (i = 0; i < n; i++) {
        x = (x << 8) | mp->p[i];
    }

    mp->p += n;
    *v = x;

    if (*type == 'x') {
        /* the ext type byte */
        if (mp->p >= mp->end) {
            return -1;
        }

        mp->p++;
    }

    if (*type != 's' && *type != 'b' && *type != 'x') {
        return 0;
    }

check_len:

    if (*v > (uint64_t) (mp->end - mp->p)) {
        return -1;
    }

    return 0;
}


static int
dstack_mp_skip(dstack_mp_t *mp, unsigned depth)
{
    u_char    type;
    uint64_t  v, i;

    if (depth > DSTACK_MP_MAX_DEPTH || dstack_mp_head(mp, &type, &v) != 0) {
        return -1;
    }

    switch (type) {

    case 's':
    case 'b':
    case 'x':
        mp->p += v;
        return 0;

    case 'a':
        for (i = 0; i < v; i++) {
            if (dstack_mp_skip(mp, depth + 1) != 0) {
                return -1;
            }
        }

        return 0;

    case 'm':
        for (i = 0; i < v; i++) {
            if (dstack_mp_skip(mp, depth + 1) != 0
                || dstack_mp_skip(mp, depth + 1) != 0)
            {
                return -1;
            }
        }

        return 0;

    default:
        return 0;
    }
}


static int
dstack_mp_map(dstack_mp_t *mp, uint64_t *n)
{
    u_char  type;

    return (dstack_mp_head(mp, &type, n) == 0 && type == 'm') ? 0 : -1;
}


static int
dstack_mp_array(dstack_mp_t *mp, uint64_t *n)
{
    u_char  type;

    return (dstack_mp_head(mp, &type, n) == 0 && type == 'a') ? 0 : -1;
}


static int
dstack_mp_str(dstack_mp_t *mp, const u_char **s, size_t *n)
{
    u_char    type;
    uint64_t  v;

    if (dstack_mp_head(mp, &type, &v) != 0 || type != 's') {
        return -1;
    }

    *s = mp->p;
    *n = (size_t) v;
    mp->p += v;

    return 0;
}


static int
dstack_mp_uint(dstack_mp_t *mp, uint64_t *v)
{
    u_char  type;

    return (dstack_mp_head(mp, &type, v) == 0 && type == 'i') ? 0 : -1;
}


/* serde writes Vec<u8> as bin, or as an array of small integers */
static int
dstack_mp_bytes(dstack_mp_t *mp, const u_char **s, size_t *n)
{
    u_char    type;
    u_char   *out;
    uint64_t  v, i, x;

    if (dstack_mp_head(mp, &type, &v) != 0) {
        return -1;
    }

    if (type == 'b' || type == 's') {
        *s = mp->p;
        *n = (size_t) v;
        mp->p += v;
        return 0;
    }

    /* each element takes at least one byte of input */
    if (type != 'a' || v > (uint64_t) (mp->end - mp->p)) {
        return -1;
    }

    out = dstack_arena_alloc(mp->att, (size_t) v);

    if (out == NULL && v > 0) {
        return -1;
    }

    for (i = 0; i < v; i++) {
        if (dstack_mp_uint(mp, &x) != 0 || x > 0xff) {
            return -1;
        }

        out[i] = (u_char) x;
    }

    *s = out;
    *n = (size_t) v;

    return 0;
}


static int
dstack_mp_key(const u_char *k, size_t n, const char *name)
{
    return n == strlen(name) && memcmp(k, name, n) == 0;
}


static int
dstack_attest_parse_v1(const u_char *data, size_t len, dstack_attest_t *att,
    const char **err)
{
    size_t         kn;
    uint64_t       n, i, version;
    dstack_mp_t    mp;
    const u_char  *k;
    unsigned       seen;

    att->arena = malloc(len);

    if (att->arena == NULL) {
        *err = "out of memory";
        return -1;
    }

    att->arena_size = len;

    mp.p = data;
    mp.end = data + len;
    mp.att = att;

    if (dstack_mp_map(&mp, &n) != 0) {
        *err = "V1 attestation is not a MessagePack map";
        return -1;
    }

    seen = 0;
    version = 0;

    for (i = 0; i < n; i++) {
        if (dstack_mp_str(&mp, &k, &kn) != 0) {
            *err = "malformed V1 attestation";
            return -1;
        }

        if (dstack_mp_key(k, kn, "version")) {
            if (dstack_mp_uint(&mp, &version) != 0) {
                *err = "malformed V1 attestation version";
                return -1;
            }

            seen |= 1;

        } else if (dstack_mp_key(k, kn, "platform")) {
            if (dstack_v1_platform(&mp, att, err) != 0) {
                return -1;
            }

            seen |= 2;

        } else if (dstack_mp_key(k, kn, "stack")) {
            if (dstack_v1_stack(&mp, att, err) != 0) {
                return -1;
            }

            seen |= 4;

        } else if (dstack_mp_skip(&mp, 1) != 0) {
            *err = "malformed V1 attestation";
            return -1;
        }
    }

    if (mp.p != mp.end) {
        *err = "trailing bytes after the V1 attestation";
        return -1;
    }

    if (seen != 7) {
        *err = "V1 attestation lacks version, platform or stack";
        return -1;
    }

    if (version != 1) {
        *err = "unsupported V1 attestation version";
        return -1;
    }

    att->format = DSTACK_ATTEST_FMT_V1;

    return 0;
}


static int
dstack_v1_platform(dstack_mp_t *mp, dstack_attest_t *att, const char **err)
{
    size_t          kn, vn, qn;
    uint64_t        n, m, i, j;
    const u_char   *k, *v, *q;
    unsigned        tdx, have_quote;

    tdx = 0;
    have_quote = 0;
    q = NULL;
    qn = 0;

    if (dstack_mp_map(mp, &n) != 0) {
        goto malformed;
    }

    for (i = 0; i < n; i++) {
        if (dstack_mp_str(mp, &k, &kn) != 0) {
            goto malformed;
        }

        if (dstack_mp_key(k, kn, "kind")) {
            if (dstack_mp_str(mp, &v, &vn) != 0) {
                goto malformed;
            }

            tdx = dstack_mp_key(v, vn, "tdx");

            if (!tdx) {
                *err = "V1 attestation platform is not TDX";
                return -1;
            }

            continue;
        }

        if (!dstack_mp_key(k, kn, "data")) {
            if (dstack_mp_skip(mp, 2) != 0) {
                goto malformed;
            }

            continue;
        }

        if (dstack_mp_map(mp, &m) != 0) {
            goto malformed;
        }

        for (j = 0; j < m; j++) {
            if (dstack_mp_str(mp, &k, &kn) != 0) {
                goto malformed;
            }

            if (dstack_mp_key(k, kn, "quote")) {
                if (dstack_mp_bytes(mp, &q, &qn) != 0) {
                    goto malformed;
                }

                have_quote = 1;

            } else if (dstack_mp_skip(mp, 3) != 0) {
                goto malformed;
            }
        }
    }

    if (!tdx || !have_quote) {
        *err = "V1 attestation lacks a TDX quote";
        return -1;
    }

    return dstack_attest_use_quote(att, q, qn, err);

malformed:

    *err = "malformed V1 attestation platform";
    return -1;
}


static int
dstack_v1_stack(dstack_mp_t *mp, dstack_attest_t *att, const char **err)
{
    size_t          kn, vn, rn;
    uint64_t        n, m, e, i, j, l;
    const u_char   *k, *v, *rd;
    unsigned        dstack;

    dstack = 0;

    if (dstack_mp_map(mp, &n) != 0) {
        goto malformed;
    }

    for (i = 0; i < n; i++) {
        if (dstack_mp_str(mp, &k, &kn) != 0) {
            goto malformed;
        }

        if (dstack_mp_key(k, kn, "kind")) {
            if (dstack_mp_str(mp, &v, &vn) != 0) {
                goto malformed;
            }

            dstack = dstack_mp_key(v, vn, "dstack")
                     || dstack_mp_key(v, vn, "dstack-pod");

            if (!dstack) {
                *err = "V1 attestation stack is not dstack";
                return -1;
            }

            continue;
        }

        if (!dstack_mp_key(k, kn, "data")) {
            if (dstack_mp_skip(mp, 2) != 0) {
                goto malformed;
            }

            continue;
        }

        if (dstack_mp_map(mp, &m) != 0) {
            goto malformed;
        }

        for (j = 0; j < m; j++) {
            if (dstack_mp_str(mp, &k, &kn) != 0) {
                goto malformed;
            }

            if (dstack_mp_key(k, kn, "report_data")) {
                if (dstack_mp_bytes(mp, &rd, &rn) != 0 || rn != 64) {
                    *err = "V1 attestation report_data is not 64 bytes";
                    return -1;
                }

                att->report_data = rd;

            } else if (dstack_mp_key(k, kn, "config")) {
                if (dstack_mp_str(mp, &att->config, &att->config_len) != 0) {
                    goto malformed;
                }

            } else if (dstack_mp_key(k, kn, "runtime_events")) {
                if (dstack_mp_array(mp, &e) != 0) {
                    goto malformed;
                }

                if (e > DSTACK_ATTEST_MAX_EVENTS) {
                    *err = "too many runtime events";
                    return -1;
                }

                att->nevents = 0;

                for (l = 0; l < e; l++) {
                    if (dstack_v1_event(mp, &att->events[l]) != 0) {
                        *err = "malformed V1 runtime event";
                        return -1;
                    }

                    att->nevents++;
                }

            } else if (dstack_mp_skip(mp, 3) != 0) {
                goto malformed;
            }
        }
    }

    if (!dstack) {
        *err = "V1 attestation lacks its stack kind";
        return -1;
    }

    return 0;

malformed:

    *err = "malformed V1 attestation stack";
    return -1;
}


static int
dstack_v1_event(dstack_mp_t *mp, dstack_event_t *ev)
{
    size_t          kn;
    uint64_t        n, i, version;
    const u_char   *k;
    unsigned        have;

    memset(ev, 0, sizeof(dstack_event_t));
    ev->digest_version = 1;
    have = 0;

    if (dstack_mp_map(mp, &n) != 0) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (dstack_mp_str(mp, &k, &kn) != 0) {
            return -1;
        }

        if (dstack_mp_key(k, kn, "event")) {
            if (dstack_mp_str(mp, &ev->name, &ev->name_len) != 0) {
                return -1;
            }

            have |= 1;

        } else if (dstack_mp_key(k, kn, "payload")) {
            if (dstack_mp_bytes(mp, &ev->payload, &ev->payload_len) != 0) {
                return -1;
            }

            have |= 2;

        } else if (dstack_mp_key(k, kn, "version")) {
            if (dstack_mp_uint(mp, &version) != 0
                || (version != 1 && version != 2))
            {
                return -1;
            }

            ev->digest_version = (unsigned) version;

        } else if (dstack_mp_skip(mp, 4) != 0) {
            return -1;
        }
    }

    return have == 3 ? 0 : -1;
}


int
dstack_attest_parse_blob(const u_char *data, size_t len,
    dstack_attest_t *att, const char **err)
{
    int  rc;

    dstack_attest_reset(att);

    if (len == 0) {
        *err = "empty attestation";
        return -1;
    }

    if (len > DSTACK_ATTEST_MAX_INPUT) {
        *err = "attestation too large";
        return -1;
    }

    if (data[0] == 0x00) {
        rc = dstack_attest_parse_v0(data, len, att, err);

    } else if ((data[0] >= 0x80 && data[0] <= 0x8f)
               || data[0] == 0xde || data[0] == 0xdf)
    {
        rc = dstack_attest_parse_v1(data, len, att, err);

    } else if (len >= 2 && (data[0] == 4 || data[0] == 5) && data[1] == 0) {
        rc = dstack_attest_parse_quote(data, len, &att->quote, err);

        if (rc == 0) {
            att->format = DSTACK_ATTEST_FMT_QUOTE;
        }

    } else {
        *err = "unknown attestation format";
        rc = -1;
    }

    if (rc != 0) {
        dstack_attest_reset(att);
    }

    return rc;
}


int
dstack_attest_parse_legacy(const u_char *quote, size_t quote_len,
    const u_char *event_log, size_t event_log_len, dstack_attest_t *att,
    const char **err)
{
    size_t           i, n, slen;
    json_t          *root, *ev, *v;
    u_char          *p;
    const char      *s;
    json_error_t     jerr;
    dstack_event_t  *e;

    dstack_attest_reset(att);

    if (dstack_attest_parse_quote(quote, quote_len, &att->quote, err) != 0) {
        return -1;
    }

    att->format = DSTACK_ATTEST_FMT_LEGACY;

    if (event_log == NULL || event_log_len == 0) {
        return 0;
    }

    if (event_log_len > DSTACK_ATTEST_MAX_INPUT) {
        *err = "legacy event log too large";
        goto failed;
    }

    if (event_log_len >= 6 && memcmp(event_log, "ELGZv1", 6) == 0) {
        *err = "compressed legacy event log is not supported";
        goto failed;
    }

    root = json_loadb((const char *) event_log, event_log_len,
                      JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL || !json_is_array(root)) {
        json_decref(root);
        *err = "legacy event log is not a JSON array";
        goto failed;
    }

    att->arena = malloc(event_log_len);

    if (att->arena == NULL) {
        json_decref(root);
        *err = "out of memory";
        goto failed;
    }

    att->arena_size = event_log_len;

    n = json_array_size(root);

    for (i = 0; i < n; i++) {
        ev = json_array_get(root, i);
        v = json_object_get(ev, "event_type");

        if (!json_is_integer(v)) {
            json_decref(root);
            *err = "legacy event without event_type";
            goto failed;
        }

        if (json_integer_value(v) != DSTACK_RUNTIME_EVENT_TYPE) {
            continue;
        }

        if (att->nevents == DSTACK_ATTEST_MAX_EVENTS) {
            json_decref(root);
            *err = "too many runtime events";
            goto failed;
        }

        e = &att->events[att->nevents];
        e->digest_version = 1;

        /* names and payloads are no longer than the JSON that holds them */

        v = json_object_get(ev, "event");
        s = json_is_string(v) ? json_string_value(v) : "";
        slen = json_is_string(v) ? json_string_length(v) : 0;
        p = dstack_arena_alloc(att, slen);

        if (p == NULL && slen > 0) {
            json_decref(root);
            *err = "malformed legacy event name";
            goto failed;
        }

        if (slen > 0) {
            memcpy(p, s, slen);
        }

        e->name = p;
        e->name_len = slen;

        v = json_object_get(ev, "event_payload");

        if (!json_is_string(v)) {
            json_decref(root);
            *err = "legacy event without a payload";
            goto failed;
        }

        slen = json_string_length(v);
        p = dstack_arena_alloc(att, slen / 2);

        if ((p == NULL && slen > 0)
            || dstack_hex_decode(p, slen / 2, json_string_value(v), slen)
               < 0)
        {
            json_decref(root);
            *err = "legacy event payload is not hex";
            goto failed;
        }

        e->payload = p;
        e->payload_len = slen / 2;
        att->nevents++;
    }

    json_decref(root);

    return 0;

failed:

    dstack_attest_reset(att);
    return -1;
}


int
dstack_attest_set_binding(dstack_attest_t *att, const u_char *spki_der,
    size_t spki_len, const u_char *app_id)
{
    int            ok;
    EVP_MD_CTX    *md;
    unsigned int   n;

    md = EVP_MD_CTX_new();

    if (md == NULL) {
        return -1;
    }

    ok = EVP_DigestInit_ex(md, EVP_sha512(), NULL)
         && EVP_DigestUpdate(md, "ratls-cert:", sizeof("ratls-cert:") - 1)
         && EVP_DigestUpdate(md, spki_der, spki_len)
         && EVP_DigestFinal_ex(md, att->expected_rd, &n);

    EVP_MD_CTX_free(md);

    if (!ok) {
        ERR_clear_error();
        return -1;
    }

    att->has_cert = 1;

    if (app_id != NULL) {
        memcpy(att->cert_app_id, app_id, 20);
        att->has_app_id = 1;
    }

    return 0;
}


int
dstack_attest_parse_cert(X509 *leaf, dstack_attest_t *att, const char **err)
{
    int                   len, rc;
    size_t                n, ln;
    u_char                app_id[DSTACK_APP_ID_LEN];
    u_char               *spki;
    const u_char         *p, *lp;
    dstack_ratls_rc_e     r;

    dstack_attest_reset(att);

    r = dstack_ratls_get_ext(leaf, DSTACK_OID_ATTESTATION, &p, &n);

    if (r == DSTACK_RATLS_OK) {
        if (dstack_attest_parse_blob(p, n, att, err) != 0) {
            goto failed;
        }

        if (att->format == DSTACK_ATTEST_FMT_QUOTE) {
            *err = "attestation extension holds a bare quote";
            goto failed;
        }

    } else if (r == DSTACK_RATLS_MISSING) {
        r = dstack_ratls_get_ext(leaf, DSTACK_OID_QUOTE, &p, &n);

        if (r == DSTACK_RATLS_MISSING) {
            *err = "certificate carries no attestation";
            goto failed;
        }

        if (r != DSTACK_RATLS_OK) {
            *err = "malformed legacy quote extension";
            goto failed;
        }

        r = dstack_ratls_get_ext(leaf, DSTACK_OID_EVENT_LOG, &lp, &ln);

        if (r == DSTACK_RATLS_MISSING) {
            lp = NULL;
            ln = 0;

        } else if (r != DSTACK_RATLS_OK) {
            *err = "malformed legacy event log extension";
            goto failed;
        }

        if (dstack_attest_parse_legacy(p, n, lp, ln, att, err) != 0) {
            goto failed;
        }

    } else {
        *err = "malformed or duplicate attestation extension";
        goto failed;
    }

    r = dstack_ratls_app_id(leaf, app_id);

    if (r != DSTACK_RATLS_OK && r != DSTACK_RATLS_MISSING) {
        *err = "malformed app_id extension";
        goto failed;
    }

    spki = NULL;
    len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf), &spki);

    if (len <= 0) {
        *err = "cannot encode the certificate's public key";
        goto failed;
    }

    rc = dstack_attest_set_binding(att, spki, (size_t) len,
                                   r == DSTACK_RATLS_OK ? app_id : NULL);
    OPENSSL_free(spki);

    if (rc != 0) {
        *err = "cannot hash the certificate's public key";
        goto failed;
    }

    return 0;

failed:

    ERR_clear_error();
    dstack_attest_reset(att);
    return -1;
}


/*
 * dstack's runtime event digest (cc-eventlog):
 *   V1: SHA384(le32(0x08000001) || ":" || name || ":" || payload)
 *   V2: SHA384(JCS {"name":"<name>","payload":"<hex>","type":134217729})
 */
void
dstack_attest_event_digest(const dstack_event_t *ev, u_char d[48])
{
    size_t         i, j;
    char           hex[64];
    u_char         c, type[4], esc[6];
    EVP_MD_CTX    *md;
    unsigned int   n;

    memset(d, 0, 48);

    md = EVP_MD_CTX_new();

    if (md == NULL || !EVP_DigestInit_ex(md, EVP_sha384(), NULL)) {
        goto done;
    }

    if (ev->digest_version != 2) {
        type[0] = DSTACK_RUNTIME_EVENT_TYPE & 0xff;
        type[1] = (DSTACK_RUNTIME_EVENT_TYPE >> 8) & 0xff;
        type[2] = (DSTACK_RUNTIME_EVENT_TYPE >> 16) & 0xff;
        type[3] = (DSTACK_RUNTIME_EVENT_TYPE >> 24) & 0xff;

        EVP_DigestUpdate(md, type, 4);
        EVP_DigestUpdate(md, ":", 1);
        EVP_DigestUpdate(md, ev->name, ev->name_len);
        EVP_DigestUpdate(md, ":", 1);
        EVP_DigestUpdate(md, ev->payload, ev->payload_len);

        EVP_DigestFinal_ex(md, d, &n);
        goto done;
    }

    EVP_DigestUpdate(md, "{\"name\":\"", 9);

    for (i = 0; i < ev->name_len; i++) {
        c = ev->name[i];

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = c;
            EVP_DigestUpdate(md, esc, 2);

        } else if (c < 0x20) {
            esc[0] = '\\';

            switch (c) {
            case '\b': esc[1] = 'b'; break;
            case '\f': esc[1] = 'f'; break;
            case '\n': esc[1] = 'n'; break;
            case '\r': esc[1] = 'r'; break;
            case '\t': esc[1] = 't'; break;
            default:   esc[1] = 'u'; break;
            }

            if (esc[1] != 'u') {
                EVP_DigestUpdate(md, esc, 2);

            } else {
                esc[2] = '0';
                esc[3] = '0';
                (void) dstack_hex_encode((char *) esc + 4, &c, 1);
                EVP_DigestUpdate(md, esc, 6);
            }

        } else {
            EVP_DigestUpdate(md, &c, 1);
        }
    }

    EVP_DigestUpdate(md, "\",\"payload\":\"", 13);

    for (i = 0; i < ev->payload_len; i += j) {
        j = ev->payload_len - i < 32 ? ev->payload_len - i : 32;

        EVP_DigestUpdate(md, hex,
                         dstack_hex_encode(hex, ev->payload + i, j) - hex);
    }

    EVP_DigestUpdate(md, "\",\"type\":134217729}", 19);
    EVP_DigestFinal_ex(md, d, &n);

done:

    EVP_MD_CTX_free(md);
}


void
dstack_attest_replay(const dstack_event_t *events, size_t n, u_char rtmr[48])
{
    size_t         i;
    u_char         buf[96];
    unsigned int   len;

    memset(rtmr, 0, 48);

    for (i = 0; i < n; i++) {
        memcpy(buf, rtmr, 48);
        dstack_attest_event_digest(&events[i], buf + 48);

        if (!EVP_Digest(buf, sizeof(buf), rtmr, &len, EVP_sha384(), NULL)) {
            ERR_clear_error();
            memset(rtmr, 0, 48);
            return;
        }
    }
}


int
dstack_attest_load_file(const char *path, u_char **data, size_t *len,
    size_t max)
{
    int          fd;
    u_char      *buf;
    size_t       size, got;
    ssize_t      n;
    struct stat  st;

    fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd == -1) {
        return -1;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)
        || (uint64_t) st.st_size > max)
    {
        close(fd);
        errno = EFBIG;
        return -1;
    }

    size = (size_t) st.st_size;
    buf = malloc(size + 1);

    if (buf == NULL) {
        close(fd);
        return -1;
    }

    for (got = 0; got < size; got += (size_t) n) {
        n = read(fd, buf + got, size - got);

        if (n <= 0) {
            if (n == -1 && errno == EINTR) {
                n = 0;
                continue;
            }

            free(buf);
            close(fd);
            return -1;
        }
    }

    close(fd);

    buf[size] = '\0';
    *data = buf;
    *len = size;

    return 0;
}


X509 *
dstack_attest_load_root(const char *path, const char **err)
{
    X509        *x;
    BIO         *bio;
    size_t       len;
    u_char      *data;
    const u_char *p;

    if (dstack_attest_load_file(path, &data, &len, 65536) != 0) {
        *err = "cannot read the root certificate file";
        return NULL;
    }

    bio = BIO_new_mem_buf(data, (int) len);
    x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);

    if (x == NULL) {
        p = data;
        x = d2i_X509(NULL, &p, (long) len);
    }

    free(data);
    ERR_clear_error();

    if (x == NULL) {
        *err = "the root file holds no certificate (PEM or DER)";
    }

    return x;
}
