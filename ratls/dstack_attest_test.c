/*
 * TAP unit tests of the attestation library against the fixtures in
 * $DSTACK_FIXTURES (default t/fixtures, from the repository root).  Extra modes:
 *   attest-unit --seeds DIR      writes a fuzzing seed corpus
 *   attest-unit --cert-seeds DIR writes DER certificates with a simulated
 *                                `.8`, legacy `.1`+`.2` and `.1` alone
 *                                (fuzz/make-corpus, the ratls-cert target)
 *   attest-unit --sim-cert FILE  writes a PEM certificate that carries a
 *                                simulated V0 attestation (for CLI tests)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "dstack_attest.h"
#include "dstack_hex.h"
#include "sim_scale.h"


#define APP_ID       "5bb4ff9a3837357f19dc176407a5709c62eb6c56"
#define SIM_APP_ID   "00112233445566778899aabbccddeeff00112233"
#define SIM_INST_ID  "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4"
#define SIM_COMPOSE                                                          \
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0"

/* 2025-07-01T00:00:00Z, inside the collateral's validity */
#define T_VALID      1751328000
/* 2025-08-01T00:00:00Z, after its nextUpdate */
#define T_EXPIRED    1754006400


#define OK_ERR(cond, fmt)                                                    \
    do { int c_ = (cond); ok(c_, fmt, err); } while (0)


typedef struct {
    u_char     *data;
    size_t      len;
} buf_t;


static int      test_no;
static int      test_failed;
static buf_t    quote, blob, coll_json;
static X509    *root;
static dstack_collateral_t  *coll;


static void
ok(int cond, const char *fmt, ...)
{
    va_list  args;

    test_no++;
    printf("%sok %d - ", cond ? "" : "not ", test_no);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");

    if (!cond) {
        test_failed++;
    }

    fflush(stdout);
}


static const char *
fixtures_dir(void)
{
    const char  *d;

    d = getenv("DSTACK_FIXTURES");

    return d != NULL && d[0] != '\0' ? d : "t/fixtures";
}


/* a missing requirement skips, but fails when CI is set */
static int
missing(const char *why, const char *what)
{
    const char  *ci;

    ci = getenv("CI");

    if (ci != NULL && ci[0] != '\0') {
        printf("1..1\nnot ok 1 - %s %s (CI is set: not skipped)\n",
               why, what);
        return 1;
    }

    printf("1..0 # SKIP %s %s\n", why, what);

    return 0;
}


static int
load(const char *rel, buf_t *b)
{
    char  path[1024];

    snprintf(path, sizeof(path), "%s/%s", fixtures_dir(), rel);

    return dstack_attest_load_file(path, &b->data, &b->len, 1 << 20);
}


static int
verify_quote(const u_char *q, size_t len, X509 *r,
    const dstack_collateral_t *c, time_t now, dstack_attest_result_t *res)
{
    int                   rc;
    const char           *err;
    dstack_attest_t       att;
    dstack_attest_opts_t  opts;

    dstack_attest_init(&att);

    if (dstack_attest_parse_blob(q, len, &att, &err) != 0) {
        memset(res, 0, sizeof(dstack_attest_result_t));
        return -2;
    }

    memset(&opts, 0, sizeof(opts));
    opts.root = r;
    opts.collateral = c;
    opts.now = now;

    rc = dstack_attest_verify(&att, &opts, res);
    dstack_attest_free(&att);

    return rc;
}


static int
st(const dstack_attest_result_t *res, dstack_check_e c)
{
    return res->check[c].status;
}


static u_char *
dup_buf(const u_char *p, size_t n)
{
    u_char  *d;

    d = malloc(n ? n : 1);

    if (d == NULL) {
        abort();
    }

    memcpy(d, p, n);

    return d;
}


/* a throwaway self-signed CA, standing in for "another root" */
static X509 *
make_cert(EVP_PKEY *key, const char *cn, int ca)
{
    X509       *x;
    X509_NAME  *name;

    x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), -86400L * 3650);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 3650);
    X509_set_pubkey(x, key);

    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (u_char *) cn, -1,
                               -1, 0);
    X509_set_issuer_name(x, name);

    if (ca) {
        X509_EXTENSION  *ext;

        ext = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints,
                                  "critical,CA:TRUE");
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }

    return x;
}


static void
add_dstack_ext(X509 *x, int arc, const u_char *payload, size_t n)
{
    int                 len;
    char                oid[64];
    u_char             *der;
    ASN1_OBJECT        *obj;
    ASN1_OCTET_STRING  *inner, *outer;
    X509_EXTENSION     *ext;

    snprintf(oid, sizeof(oid), "1.3.6.1.4.1.62397.1.%d", arc);
    obj = OBJ_txt2obj(oid, 1);

    inner = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(inner, payload, (int) n);
    der = NULL;
    len = i2d_ASN1_OCTET_STRING(inner, &der);

    outer = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(outer, der, len);

    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, outer);
    X509_add_ext(x, ext, -1);

    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(outer);
    ASN1_OCTET_STRING_free(inner);
    ASN1_OBJECT_free(obj);
    OPENSSL_free(der);
}


/*
 * A leaf certificate with a simulated attestation for its own key: kind 0
 * is `.8` V0, kind 1 the legacy `.1` + `.2` pair, kind 2 `.1` alone.
 */
static X509 *
make_sim_cert(EVP_PKEY **keyp, const char *cert_app_id, int kind)
{
    int        len;
    X509      *x;
    size_t     n;
    u_char     id[20], *spki, *sim;
    EVP_PKEY  *key;

    key = EVP_EC_gen("P-256");
    x = make_cert(key, "sim-leaf", 0);

    spki = NULL;
    len = i2d_PUBKEY(key, &spki);

    if (sim_scale_build_v0(quote.data, quote.len, spki, (size_t) len,
                           SIM_APP_ID, SIM_INST_ID, SIM_COMPOSE,
                           &sim, &n) != 0)
    {
        abort();
    }

    if (kind == 0) {
        add_dstack_ext(x, 8, sim, n);

    } else {
        char             json[4096];
        const char      *err;
        dstack_attest_t  att;
        size_t           i, j, used;

        dstack_attest_init(&att);

        if (dstack_attest_parse_blob(sim, n, &att, &err) != 0) {
            abort();
        }

        add_dstack_ext(x, 1, att.quote.data, att.quote.len);

        if (kind == 2) {
            dstack_attest_free(&att);
            goto signed_ext;
        }

        used = (size_t) snprintf(json, sizeof(json),
                  "[{\"imr\":0,\"event_type\":1,\"digest\":\"00\","
                  "\"event\":\"\",\"event_payload\":\"00\"}");

        for (i = 0; i < att.nevents; i++) {
            used += (size_t) snprintf(json + used, sizeof(json) - used,
                     ",{\"imr\":3,\"event_type\":134217729,\"digest\":\"\","
                     "\"event\":\"%.*s\",\"event_payload\":\"",
                     (int) att.events[i].name_len, att.events[i].name);

            for (j = 0; j < att.events[i].payload_len; j++) {
                used += (size_t) snprintf(json + used, sizeof(json) - used,
                                          "%02x", att.events[i].payload[j]);
            }

            used += (size_t) snprintf(json + used, sizeof(json) - used,
                                      "\"}");
        }

        used += (size_t) snprintf(json + used, sizeof(json) - used, "]");
        add_dstack_ext(x, 2, (u_char *) json, used);
        dstack_attest_free(&att);
    }

signed_ext:

    if (cert_app_id != NULL) {
        (void) dstack_hex_decode(id, sizeof(id), cert_app_id,
                                 strlen(cert_app_id));
        add_dstack_ext(x, 3, id, 20);
    }

    X509_sign(x, key, EVP_sha256());

    free(sim);
    OPENSSL_free(spki);
    *keyp = key;

    return x;
}


/* ---- a little MessagePack writer for V1 blobs ---- */

typedef struct {
    u_char  *p;
    size_t   len;
    size_t   cap;
} mp_buf_t;


static void
mp_raw(mp_buf_t *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);

        if (b->p == NULL) {
            abort();
        }
    }

    memcpy(b->p + b->len, d, n);
    b->len += n;
}


static void
mp_head(mp_buf_t *b, u_char fix, u_char b16, u_char b32, size_t n, size_t lim)
{
    u_char  h[5];

    if (n < lim) {
        h[0] = (u_char) (fix | n);
        mp_raw(b, h, 1);

    } else if (n < 65536) {
        h[0] = b16;
        h[1] = (u_char) (n >> 8);
        h[2] = (u_char) n;
        mp_raw(b, h, 3);

    } else {
        h[0] = b32;
        h[1] = (u_char) (n >> 24);
        h[2] = (u_char) (n >> 16);
        h[3] = (u_char) (n >> 8);
        h[4] = (u_char) n;
        mp_raw(b, h, 5);
    }
}


static void
mp_str(mp_buf_t *b, const void *s, size_t n)
{
    mp_head(b, 0xa0, 0xda, 0xdb, n, 32);
    mp_raw(b, s, n);
}


static void
mp_cstr(mp_buf_t *b, const char *s)
{
    mp_str(b, s, strlen(s));
}


static void
mp_bin(mp_buf_t *b, const u_char *p, size_t n)
{
    u_char  h[5];

    h[0] = 0xc6;
    h[1] = (u_char) (n >> 24);
    h[2] = (u_char) (n >> 16);
    h[3] = (u_char) (n >> 8);
    h[4] = (u_char) n;
    mp_raw(b, h, 5);
    mp_raw(b, p, n);
}


/* serde's default for Vec<u8>: an array of integers */
static void
mp_int_array(mp_buf_t *b, const u_char *p, size_t n)
{
    size_t  i;
    u_char  h[2];

    mp_head(b, 0x90, 0xdc, 0xdd, n, 16);

    for (i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            mp_raw(b, &p[i], 1);

        } else {
            h[0] = 0xcc;
            h[1] = p[i];
            mp_raw(b, h, 2);
        }
    }
}


static void
mp_uint(mp_buf_t *b, u_char v)
{
    mp_raw(b, &v, 1);
}


/* the V1 encoding of a parsed attestation; events of digest version 2 */
static void
encode_v1(const dstack_attest_t *att, mp_buf_t *b, int v2_from)
{
    size_t  i;

    memset(b, 0, sizeof(mp_buf_t));

    mp_head(b, 0x80, 0xde, 0xdf, 3, 16);
    mp_cstr(b, "version");
    mp_uint(b, 1);

    mp_cstr(b, "platform");
    mp_head(b, 0x80, 0xde, 0xdf, 2, 16);
    mp_cstr(b, "kind");
    mp_cstr(b, "tdx");
    mp_cstr(b, "data");
    mp_head(b, 0x80, 0xde, 0xdf, 2, 16);
    mp_cstr(b, "quote");
    mp_int_array(b, att->quote.data, att->quote.len);
    mp_cstr(b, "event_log");
    mp_head(b, 0x90, 0xdc, 0xdd, 1, 16);
    mp_head(b, 0x80, 0xde, 0xdf, 2, 16);
    mp_cstr(b, "imr");
    mp_uint(b, 3);
    mp_cstr(b, "digest");
    mp_bin(b, (u_char *) "\x01\x02", 2);

    mp_cstr(b, "stack");
    mp_head(b, 0x80, 0xde, 0xdf, 2, 16);
    mp_cstr(b, "kind");
    mp_cstr(b, "dstack");
    mp_cstr(b, "data");
    mp_head(b, 0x80, 0xde, 0xdf, 3, 16);
    mp_cstr(b, "report_data");
    mp_int_array(b, att->quote.report_data, 64);
    mp_cstr(b, "runtime_events");
    mp_head(b, 0x90, 0xdc, 0xdd, att->nevents, 16);

    for (i = 0; i < att->nevents; i++) {
        mp_head(b, 0x80, 0xde, 0xdf, (int) i >= v2_from ? 3 : 2, 16);
        mp_cstr(b, "event");
        mp_str(b, att->events[i].name, att->events[i].name_len);
        mp_cstr(b, "payload");
        mp_bin(b, att->events[i].payload, att->events[i].payload_len);

        if ((int) i >= v2_from) {
            mp_cstr(b, "version");
            mp_uint(b, 2);
        }
    }

    mp_cstr(b, "config");
    mp_str(b, att->config, att->config_len);
}


static void
test_quote(void)
{
    int                     rc, i;
    size_t                  n, q_len;
    u_char                 *q, *p;
    EVP_PKEY               *key;
    X509                   *other;
    const char             *err;
    dstack_quote_t          pq;
    dstack_attest_result_t  res;

    rc = dstack_attest_parse_quote(quote.data, quote.len, &pq, &err);
    ok(rc == 0, "v4 quote parses");
    ok(pq.version == 4 && pq.signed_len == 632 && pq.body_type == 2,
       "v4 quote: TD 1.0 body, signed region [0, 632)");
    ok(pq.len < quote.len, "trailing zero bytes are tolerated (%zu of %zu)",
       pq.len, quote.len);
    ok(pq.mr_td == quote.data + 184 && pq.rtmr[3] == quote.data + 520
       && pq.report_data == quote.data + 568, "v4 field offsets");

    rc = verify_quote(quote.data, quote.len, root, coll, T_VALID, &res);
    ok(rc == 0, "fixture quote verifies with collateral at 2025-07-01");
    ok(st(&res, DSTACK_CHECK_QUOTE_SIG) == DSTACK_CHECK_PASS,
       "quote signature: %s", res.check[DSTACK_CHECK_QUOTE_SIG].reason);
    ok(st(&res, DSTACK_CHECK_QE_REPORT) == DSTACK_CHECK_PASS,
       "QE report: %s", res.check[DSTACK_CHECK_QE_REPORT].reason);
    ok(st(&res, DSTACK_CHECK_PCK_CHAIN) == DSTACK_CHECK_PASS,
       "PCK chain: %s", res.check[DSTACK_CHECK_PCK_CHAIN].reason);
    ok(st(&res, DSTACK_CHECK_TD_POLICY) == DSTACK_CHECK_PASS,
       "TD policy: %s", res.check[DSTACK_CHECK_TD_POLICY].reason);
    ok(st(&res, DSTACK_CHECK_TCB) == DSTACK_CHECK_PASS,
       "TCB: %s", res.check[DSTACK_CHECK_TCB].reason);
    ok(strcmp(res.tcb_status, "UpToDate") == 0,
       "TCB status is the collateral's UpToDate (got '%s')", res.tcb_status);
    ok(st(&res, DSTACK_CHECK_BINDING) == DSTACK_CHECK_SKIPPED
       && st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_SKIPPED,
       "bare quote: binding and RTMR3 are skipped");
    ok(strncmp(res.mrtd, "91eb2b44d141d4ec", 16) == 0,
       "mrtd exported (%.16s...)", res.mrtd);

    rc = verify_quote(quote.data, quote.len, root, NULL, 0, &res);
    ok(rc == 0 && st(&res, DSTACK_CHECK_TCB) == DSTACK_CHECK_SKIPPED,
       "without collateral the TCB check is skipped, the rest passes now");

    rc = verify_quote(quote.data, quote.len, root, coll, T_EXPIRED, &res);
    ok(rc != 0 && st(&res, DSTACK_CHECK_TCB) == DSTACK_CHECK_FAIL
       && st(&res, DSTACK_CHECK_QUOTE_SIG) == DSTACK_CHECK_PASS,
       "collateral past nextUpdate fails the TCB check only: %s",
       res.check[DSTACK_CHECK_TCB].reason);

    /* a byte of the signed region */

    q = dup_buf(quote.data, quote.len);
    q[200] ^= 0x01;
    verify_quote(q, quote.len, root, coll, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_QUOTE_SIG) == DSTACK_CHECK_FAIL
       && st(&res, DSTACK_CHECK_QE_REPORT) == DSTACK_CHECK_PASS
       && st(&res, DSTACK_CHECK_PCK_CHAIN) == DSTACK_CHECK_PASS,
       "flipped MRTD byte: only the quote signature fails");
    free(q);

    /* a byte of the QE report */

    q = dup_buf(quote.data, quote.len);
    q[pq.qe_report - quote.data + 70] ^= 0x01;
    verify_quote(q, quote.len, root, coll, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_QE_REPORT) == DSTACK_CHECK_FAIL
       && st(&res, DSTACK_CHECK_QUOTE_SIG) == DSTACK_CHECK_PASS,
       "flipped QE report byte: the QE report check fails: %s",
       res.check[DSTACK_CHECK_QE_REPORT].reason);
    free(q);

    /* the QE report_data (the key binding) */

    q = dup_buf(quote.data, quote.len);
    q[pq.qe_auth - quote.data] ^= 0x01;
    verify_quote(q, quote.len, root, coll, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_QE_REPORT) == DSTACK_CHECK_FAIL,
       "flipped QE auth data byte: %s",
       res.check[DSTACK_CHECK_QE_REPORT].reason);
    free(q);

    /* a base64 character inside the PCK leaf */

    q = dup_buf(quote.data, quote.len);
    p = q + (pq.pck_chain - quote.data) + 600;
    *p = (*p == 'A') ? 'B' : 'A';
    verify_quote(q, quote.len, root, coll, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_PCK_CHAIN) == DSTACK_CHECK_FAIL
       && st(&res, DSTACK_CHECK_QUOTE_SIG) == DSTACK_CHECK_PASS,
       "altered PCK leaf: the PCK chain fails: %s",
       res.check[DSTACK_CHECK_PCK_CHAIN].reason);
    free(q);

    /* the same chain against another root */

    key = EVP_EC_gen("P-256");
    other = make_cert(key, "Not Intel SGX Root CA", 1);
    X509_sign(other, key, EVP_sha256());
    verify_quote(quote.data, quote.len, other, coll, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_PCK_CHAIN) == DSTACK_CHECK_FAIL
       && st(&res, DSTACK_CHECK_TCB) == DSTACK_CHECK_FAIL,
       "another pinned root: PCK chain and TCB fail: %s",
       res.check[DSTACK_CHECK_PCK_CHAIN].reason);
    X509_free(other);
    EVP_PKEY_free(key);

    /* the debug attribute */

    q = dup_buf(quote.data, quote.len);
    q[pq.td_attributes - quote.data] |= 0x01;
    verify_quote(q, quote.len, root, NULL, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_TD_POLICY) == DSTACK_CHECK_FAIL,
       "debug TD: %s", res.check[DSTACK_CHECK_TD_POLICY].reason);
    free(q);

    q = dup_buf(quote.data, quote.len);
    q[pq.mr_signer_seam - quote.data + 5] = 0x42;
    verify_quote(q, quote.len, root, NULL, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_TD_POLICY) == DSTACK_CHECK_FAIL,
       "non-zero mr_signer_seam: %s",
       res.check[DSTACK_CHECK_TD_POLICY].reason);
    free(q);

    /* malformed quotes: every truncation, bad lengths, versions */

    q_len = pq.len;
    rc = 0;

    for (n = 0; n < q_len; n++) {
        if (dstack_attest_parse_quote(quote.data, n, &pq, &err) == 0) {
            rc++;
        }
    }

    ok(rc == 0, "every truncation of the quote is rejected");

    q = dup_buf(quote.data, quote.len);
    q[quote.len - 1] = 0x01;
    OK_ERR(dstack_attest_parse_quote(q, quote.len, &pq, &err) != 0,
       "non-zero trailing byte rejected: %s");
    memcpy(q, quote.data, quote.len);
    q[0] = 6;
    OK_ERR(dstack_attest_parse_quote(q, quote.len, &pq, &err) != 0
       && strstr(err, "version") != NULL, "version 6 rejected: %s");
    q[0] = 3;
    OK_ERR(dstack_attest_parse_quote(q, quote.len, &pq, &err) != 0,
       "version 3 rejected: %s");
    memcpy(q, quote.data, quote.len);
    q[632] = 0xff;
    q[633] = 0xff;
    OK_ERR(dstack_attest_parse_quote(q, quote.len, &pq, &err) != 0,
       "huge signature data length rejected: %s");
    memcpy(q, quote.data, quote.len);
    q[636 + 130] ^= 0x10;
    OK_ERR(dstack_attest_parse_quote(q, quote.len, &pq, &err) != 0,
       "bad certification data length rejected: %s");
    memcpy(q, quote.data, quote.len);
    q[4] = 0x00;
    OK_ERR(dstack_attest_parse_quote(q, quote.len, &pq, &err) != 0,
       "SGX TEE type rejected: %s");
    free(q);

    /* v5: TD 1.0 and TD 1.5 bodies built from the v4 quote */

    q = malloc(quote.len + 6 + 64);
    q[0] = 5;
    q[1] = 0;
    memcpy(q + 2, quote.data + 2, 46);
    q[48] = 2;
    q[49] = 0;
    q[50] = 584 & 0xff;
    q[51] = 584 >> 8;
    q[52] = 0;
    q[53] = 0;
    memcpy(q + 54, quote.data + 48, quote.len - 48);

    rc = dstack_attest_parse_quote(q, quote.len + 6, &pq, &err);
    ok(rc == 0 && pq.signed_len == 638 && pq.mr_td == q + 190
       && pq.report_data == q + 574 && pq.mr_service_td == NULL,
       "v5 TD 1.0 parses, fields shift by 6");
    verify_quote(q, quote.len + 6, root, NULL, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_QUOTE_SIG) == DSTACK_CHECK_FAIL
       && st(&res, DSTACK_CHECK_QE_REPORT) == DSTACK_CHECK_PASS,
       "v5 rebuilt from v4: signature fails, QE report passes");

    q[48] = 3;
    q[50] = 648 & 0xff;
    q[51] = 648 >> 8;
    memmove(q + 54 + 648, q + 54 + 584, quote.len - 48 - 584);
    memset(q + 54 + 584, 0, 64);
    rc = dstack_attest_parse_quote(q, quote.len + 6 + 64, &pq, &err);
    ok(rc == 0 && pq.signed_len == 702 && pq.mr_service_td == q + 54 + 600,
       "v5 TD 1.5 parses, signed region [0, 702)");
    verify_quote(q, quote.len + 70, root, NULL, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_TD_POLICY) == DSTACK_CHECK_PASS,
       "TD 1.5 with zero mr_service_td passes the policy");
    q[54 + 610] = 1;
    verify_quote(q, quote.len + 70, root, NULL, T_VALID, &res);
    ok(st(&res, DSTACK_CHECK_TD_POLICY) == DSTACK_CHECK_FAIL,
       "TD 1.5 with a service TD: %s",
       res.check[DSTACK_CHECK_TD_POLICY].reason);
    q[48] = 7;
    OK_ERR(dstack_attest_parse_quote(q, quote.len + 70, &pq, &err) != 0,
       "unknown v5 body type rejected: %s");
    free(q);

    (void) i;
}


static void
test_hex(void)
{
    char    text[8];
    u_char  b[4];

    static const u_char  bytes[4] = { 0x00, 0x9f, 0xa0, 0xff };

    ok(dstack_hex_encode(text, bytes, 4) == text + 8
       && memcmp(text, "009fa0ff", 8) == 0, "hex: encodes lowercase");
    ok(dstack_hex_decode(b, 4, "009FA0ff", 8) == 4
       && memcmp(b, bytes, 4) == 0, "hex: decodes either case");
    ok(dstack_hex_decode(b, 4, "", 0) == 0, "hex: empty decodes to nothing");
    ok(dstack_hex_decode(b, 4, "009", 3) == -1, "hex: odd length rejected");
    ok(dstack_hex_decode(b, 4, "0g", 2) == -1
       && dstack_hex_decode(b, 4, "g0", 2) == -1
       && dstack_hex_decode(b, 4, "0:", 2) == -1
       && dstack_hex_decode(b, 4, "@0", 2) == -1, "hex: non-hex rejected");
    ok(dstack_hex_decode(b, 2, "009fa0", 6) == -1,
       "hex: more than max bytes rejected");
}


static void
test_time(void)
{
    time_t  t;

    ok(dstack_time_parse("2025-07-01T00:00:00Z", 20, &t) == 0
       && t == T_VALID, "RFC 3339 time, Z");
    ok(dstack_time_parse("2025-08-01T02:30:00.123+02:30", 29, &t)
       == 0 && t == T_EXPIRED, "RFC 3339 time, fraction and offset");
    ok(dstack_time_parse("2024-02-29T12:00:00Z", 20, &t) == 0
       && t == 1709208000, "RFC 3339 time, leap day");
    ok(dstack_time_parse("2025-13-01T00:00:00Z", 20, &t) != 0
       && dstack_time_parse("2025-07-01 00:00", 16, &t) != 0
       && dstack_time_parse("2025-07-01T00:00:00", 19, &t) != 0,
       "bad times rejected");
}


static void
test_collateral(void)
{
    u_char                 *j, *p;
    const char             *err = "";
    dstack_collateral_t    *c;
    dstack_attest_result_t  res;

    OK_ERR(dstack_collateral_parse((u_char *) "{}", 2, &err) == NULL,
       "empty collateral rejected: %s");
    ok(dstack_collateral_parse((u_char *) "[1", 2, &err) == NULL,
       "broken JSON collateral rejected");

    /* change one svn inside tcb_info: still JSON, no longer Intel's */
    j = dup_buf(coll_json.data, coll_json.len);
    p = (u_char *) strstr((char *) j, "\\\"pcesvn\\\":11");

    if (p == NULL) {
        p = (u_char *) strstr((char *) j, "pcesvn");
    }

    if (p != NULL) {
        p[strlen("\\\"pcesvn\\\":")] = '9';
    }

    c = dstack_collateral_parse(j, coll_json.len, &err);
    ok(c != NULL, "tampered collateral still parses");

    if (c != NULL) {
        verify_quote(quote.data, quote.len, root, c, T_VALID, &res);
        ok(st(&res, DSTACK_CHECK_TCB) == DSTACK_CHECK_FAIL
           && strstr(res.check[DSTACK_CHECK_TCB].reason, "signature"),
           "tampered TCB info: %s", res.check[DSTACK_CHECK_TCB].reason);
        dstack_collateral_free(c);

    } else {
        ok(0, "tampered TCB info");
    }

    free(j);
}


static void
test_blob(void)
{
    int                     rc, bad;
    size_t                  n, i;
    u_char                  rtmr[48], *m, d[48], buf[96];
    mp_buf_t                mb;
    const char             *err;
    unsigned int            len;
    dstack_attest_t         att, att1;
    dstack_attest_opts_t    opts;
    dstack_attest_result_t  res;
    dstack_event_t          ev;
    const char             *canon;

    dstack_attest_init(&att);
    rc = dstack_attest_parse_blob(blob.data, blob.len, &att, &err);
    ok(rc == 0 && att.format == DSTACK_ATTEST_FMT_V0,
       "attestation-v0.bin parses as V0%s%s", rc ? ": " : "",
       rc ? err : "");
    ok(att.nevents == 9, "9 runtime events (got %zu)", att.nevents);

    dstack_attest_replay(att.events, att.nevents, rtmr);
    ok(memcmp(rtmr, att.quote.rtmr[3], 48) == 0,
       "runtime events replay to the quote's RTMR3");

    memset(&opts, 0, sizeof(opts));
    opts.root = root;
    opts.now = T_VALID;
    dstack_attest_verify(&att, &opts, &res);
    ok(st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_PASS,
       "RTMR3 check: %s", res.check[DSTACK_CHECK_RTMR3].reason);
    ok(strcmp(res.app_id, APP_ID) == 0, "app-id event is %s (got %s)",
       APP_ID, res.app_id);
    ok(strcmp(res.compose_hash, "c143116fef3940e7f776bfc0919c256232ae5338"
                                "a6e948c96b711e0b2383483a") == 0,
       "compose-hash exported");
    ok(strcmp(res.instance_id, "1691ed1b47506cad7d08834668691d88246f5b1f")
       == 0, "instance-id exported");
    ok(strcmp(res.rtmr3_replayed, res.rtmr[3]) == 0, "replayed RTMR3 shown");

    /* with a certificate app_id that differs */
    att.has_app_id = 1;
    memset(att.cert_app_id, 0x11, 20);
    dstack_attest_verify(&att, &opts, &res);
    ok(st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_FAIL,
       "another certificate app_id: %s",
       res.check[DSTACK_CHECK_RTMR3].reason);
    att.has_app_id = 0;

    /* a changed event payload no longer replays */
    att.events[1].payload = (const u_char *) "01234567890123456789";
    dstack_attest_verify(&att, &opts, &res);
    ok(st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_FAIL,
       "a changed app-id event: %s", res.check[DSTACK_CHECK_RTMR3].reason);
    dstack_attest_parse_blob(blob.data, blob.len, &att, &err);

    /* every truncation and junk after the blob */
    bad = 0;

    for (n = 0; n < blob.len; n++) {
        dstack_attest_init(&att1);

        if (dstack_attest_parse_blob(blob.data, n, &att1, &err) == 0) {
            bad++;
        }

        dstack_attest_free(&att1);
    }

    ok(bad == 0, "every truncation of the V0 blob is rejected");

    m = malloc(blob.len + 1);
    memcpy(m, blob.data, blob.len);
    m[blob.len] = 0;
    dstack_attest_init(&att1);
    OK_ERR(dstack_attest_parse_blob(m, blob.len + 1, &att1, &err) != 0,
       "a trailing byte after V0 is rejected: %s");
    m[1] = 3;
    OK_ERR(dstack_attest_parse_blob(m, blob.len, &att1, &err) != 0,
       "a V0 blob for another platform is rejected: %s");
    free(m);

    /* V1 MessagePack, built from the V0 content */

    encode_v1(&att, &mb, 1000);
    rc = dstack_attest_parse_blob(mb.p, mb.len, &att1, &err);
    ok(rc == 0 && att1.format == DSTACK_ATTEST_FMT_V1 && att1.nevents == 9,
       "V1 MessagePack parses%s%s", rc ? ": " : "", rc ? err : "");
    dstack_attest_verify(&att1, &opts, &res);
    ok(st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_PASS
       && strcmp(res.app_id, APP_ID) == 0, "V1: RTMR3 replays, app-id %s",
       res.app_id);
    ok(st(&res, DSTACK_CHECK_BINDING) == DSTACK_CHECK_SKIPPED,
       "V1 without a certificate: binding skipped");

    bad = 0;

    for (n = 0; n < mb.len; n += (n < 200 || mb.len - n < 400) ? 1 : 97) {
        if (dstack_attest_parse_blob(mb.p, n, &att1, &err) == 0) {
            bad++;
        }
    }

    ok(bad == 0, "truncated V1 blobs are rejected");
    free(mb.p);

    /* V2 (canonical JSON) digests change the replay */
    encode_v1(&att, &mb, 2);
    rc = dstack_attest_parse_blob(mb.p, mb.len, &att1, &err);
    dstack_attest_verify(&att1, &opts, &res);
    ok(rc == 0 && att1.events[2].digest_version == 2
       && st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_FAIL,
       "V1 with version-2 events replays differently");
    free(mb.p);
    dstack_attest_free(&att1);

    ev.name = (const u_char *) "compose-hash";
    ev.name_len = 12;
    ev.payload = (const u_char *) "\xab\xcd";
    ev.payload_len = 2;
    ev.digest_version = 2;
    dstack_attest_replay(&ev, 1, rtmr);

    canon = "{\"name\":\"compose-hash\",\"payload\":\"abcd\","
            "\"type\":134217729}";
    EVP_Digest(canon, strlen(canon), d, &len, EVP_sha384(), NULL);
    memset(buf, 0, 48);
    memcpy(buf + 48, d, 48);
    EVP_Digest(buf, 96, d, &len, EVP_sha384(), NULL);
    ok(memcmp(d, rtmr, 48) == 0, "V2 digest is SHA384 of the JCS form");

    ev.name = (const u_char *) "a\"b\\\n\x01";
    ev.name_len = 6;
    ev.payload_len = 0;
    dstack_attest_replay(&ev, 1, rtmr);
    canon = "{\"name\":\"a\\\"b\\\\\\n\\u0001\",\"payload\":\"\","
            "\"type\":134217729}";
    EVP_Digest(canon, strlen(canon), d, &len, EVP_sha384(), NULL);
    memcpy(buf + 48, d, 48);
    EVP_Digest(buf, 96, d, &len, EVP_sha384(), NULL);
    ok(memcmp(d, rtmr, 48) == 0, "V2 digest escapes names as JCS does");

    /* garbage of every shape: errors, never crashes */
    bad = 0;
    srand(7);
    m = malloc(blob.len);

    for (i = 0; i < 3000; i++) {
        memcpy(m, blob.data, blob.len);
        m[rand() % blob.len] ^= (u_char) (1 + rand() % 255);
        m[rand() % 64] = (u_char) rand();

        if (dstack_attest_parse_blob(m, blob.len, &att1, &err) == 0) {
            dstack_attest_verify(&att1, &opts, &res);
        }

        dstack_attest_free(&att1);
    }

    for (i = 0; i < 2000; i++) {
        for (n = 0; n < 600; n++) {
            m[n] = (u_char) rand();
        }

        m[0] = (u_char) (i % 3 == 0 ? 0x00 : i % 3 == 1 ? 0x83 : 0x04);
        m[1] = 0;

        if (dstack_attest_parse_blob(m, 600, &att1, &err) == 0) {
            bad++;
        }

        dstack_attest_free(&att1);
    }

    ok(bad == 0, "random blobs are rejected without crashing");
    free(m);

    OK_ERR(dstack_attest_parse_legacy(quote.data, quote.len,
                                  (u_char *) "ELGZv1xx", 8, &att1, &err) != 0,
       "compressed legacy event log: %s");
    OK_ERR(dstack_attest_parse_legacy(quote.data, quote.len,
                                  (u_char *) "{\"a\":1}", 7, &att1, &err) != 0,
       "legacy event log that is not an array: %s");

    dstack_attest_free(&att);
}


static void
test_cert(void)
{
    X509                   *x;
    EVP_PKEY               *key;
    const char             *err;
    dstack_attest_t         att;
    dstack_attest_opts_t    opts;
    dstack_attest_result_t  res;

    memset(&opts, 0, sizeof(opts));
    opts.root = root;
    opts.now = T_VALID;
    dstack_attest_init(&att);

    x = make_sim_cert(&key, SIM_APP_ID, 0);
    ok(dstack_attest_parse_cert(x, &att, &err) == 0 && att.has_app_id
       && att.format == DSTACK_ATTEST_FMT_V0, "simulated V0 certificate");
    dstack_attest_verify(&att, &opts, &res);
    ok(st(&res, DSTACK_CHECK_BINDING) == DSTACK_CHECK_PASS,
       "sim: binding %s", res.check[DSTACK_CHECK_BINDING].reason);
    ok(st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_PASS
       && strcmp(res.app_id, SIM_APP_ID) == 0
       && strcmp(res.instance_id, SIM_INST_ID) == 0
       && strcmp(res.compose_hash, SIM_COMPOSE) == 0,
       "sim: %s", res.check[DSTACK_CHECK_RTMR3].reason);
    ok(st(&res, DSTACK_CHECK_QUOTE_SIG) == DSTACK_CHECK_FAIL && !res.ok,
       "sim: the Intel signature no longer matches");

    opts.require = DSTACK_REQUIRE_BIND;
    ok(dstack_attest_verify(&att, &opts, &res) == 0,
       "sim: passes when only binding and replay are required");
    opts.require = 0;
    dstack_attest_free(&att);
    X509_free(x);
    EVP_PKEY_free(key);

    x = make_sim_cert(&key, APP_ID, 0);
    dstack_attest_parse_cert(x, &att, &err);
    dstack_attest_verify(&att, &opts, &res);
    ok(st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_FAIL,
       "sim with another .3: %s", res.check[DSTACK_CHECK_RTMR3].reason);
    dstack_attest_free(&att);
    X509_free(x);
    EVP_PKEY_free(key);

    x = make_sim_cert(&key, NULL, 1);
    ok(dstack_attest_parse_cert(x, &att, &err) == 0
       && att.format == DSTACK_ATTEST_FMT_LEGACY && !att.has_app_id,
       "legacy .1/.2 certificate parses");
    dstack_attest_verify(&att, &opts, &res);
    ok(st(&res, DSTACK_CHECK_BINDING) == DSTACK_CHECK_PASS
       && st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_PASS
       && strcmp(res.app_id, SIM_APP_ID) == 0,
       "legacy: binding and replay pass, app-id %s", res.app_id);
    dstack_attest_free(&att);
    X509_free(x);
    EVP_PKEY_free(key);

    x = make_sim_cert(&key, SIM_APP_ID, 2);
    ok(dstack_attest_parse_cert(x, &att, &err) == 0
       && att.format == DSTACK_ATTEST_FMT_LEGACY && att.nevents == 0,
       "legacy .1 without .2 parses");
    dstack_attest_verify(&att, &opts, &res);
    ok(st(&res, DSTACK_CHECK_BINDING) == DSTACK_CHECK_PASS
       && st(&res, DSTACK_CHECK_RTMR3) == DSTACK_CHECK_FAIL,
       "legacy without an event log but with .3: %s",
       res.check[DSTACK_CHECK_RTMR3].reason);
    dstack_attest_free(&att);
    X509_free(x);
    EVP_PKEY_free(key);

    key = EVP_EC_gen("P-256");
    x = make_cert(key, "plain", 0);
    X509_sign(x, key, EVP_sha256());
    OK_ERR(dstack_attest_parse_cert(x, &att, &err) != 0
       && ERR_peek_error() == 0,
       "a certificate without attestation: %s");
    X509_free(x);
    EVP_PKEY_free(key);
}


static int
write_file(const char *dir, const char *name, const u_char *p, size_t n)
{
    char   path[1024];
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");

    if (f == NULL) {
        return -1;
    }

    fwrite(p, 1, n, f);

    return fclose(f);
}


static int
write_cert_seeds(const char *dir)
{
    int                 kind, len, rc;
    X509               *x;
    u_char             *der;
    EVP_PKEY           *key;
    static const char  *names[] = { "cert-v0.der", "cert-legacy.der",
                                    "cert-legacy-quote-only.der" };

    rc = 0;

    for (kind = 0; kind < 3; kind++) {
        x = make_sim_cert(&key, SIM_APP_ID, kind);

        der = NULL;
        len = i2d_X509(x, &der);

        if (len <= 0
            || write_file(dir, names[kind], der, (size_t) len) != 0)
        {
            rc = 1;
        }

        OPENSSL_free(der);
        X509_free(x);
        EVP_PKEY_free(key);
    }

    return rc;
}


static int
write_seeds(const char *dir)
{
    size_t           n, len, spki_len;
    u_char          *sim, spki[91];
    mp_buf_t         mb;
    const char      *err;
    dstack_attest_t  att;

    dstack_attest_init(&att);

    if (dstack_attest_parse_blob(blob.data, blob.len, &att, &err) != 0) {
        return 1;
    }

    write_file(dir, "quote-v4", quote.data, quote.len);
    write_file(dir, "attestation-v0", blob.data, blob.len);

    encode_v1(&att, &mb, 4);
    write_file(dir, "attestation-v1", mb.p, mb.len);
    free(mb.p);

    memset(spki, 0x5a, sizeof(spki));
    spki_len = sizeof(spki);

    if (sim_scale_build_v0(quote.data, quote.len, spki, spki_len,
                           SIM_APP_ID, SIM_INST_ID, SIM_COMPOSE,
                           &sim, &len) == 0)
    {
        write_file(dir, "sim-v0", sim, len);
        free(sim);
    }

    n = att.quote.len / 2;
    write_file(dir, "quote-half", quote.data, n);

    dstack_attest_free(&att);

    return 0;
}


static int
write_sim_cert(const char *path)
{
    X509      *x;
    FILE      *f;
    EVP_PKEY  *key;

    x = make_sim_cert(&key, SIM_APP_ID, 0);
    f = fopen(path, "w");

    if (f == NULL) {
        return 1;
    }

    PEM_write_X509(f, x);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);

    return 0;
}


int
main(int argc, char **argv)
{
    int          rc;
    char         path[1024];
    const char  *err;

    if (load("tdx/quote-v4.bin", &quote) != 0
        || load("tdx/attestation-v0.bin", &blob) != 0
        || load("tdx/quote-v4.collateral.json", &coll_json) != 0)
    {
        return missing("fixtures not found in", fixtures_dir());
    }

    if (argc == 3 && strcmp(argv[1], "--seeds") == 0) {
        return write_seeds(argv[2]);
    }

    if (argc == 3 && strcmp(argv[1], "--cert-seeds") == 0) {
        return write_cert_seeds(argv[2]);
    }

    if (argc == 3 && strcmp(argv[1], "--sim-cert") == 0) {
        return write_sim_cert(argv[2]);
    }

    snprintf(path, sizeof(path), "%s/intel/sgx-root-ca.pem", fixtures_dir());
    root = dstack_attest_load_root(path, &err);
    coll = dstack_collateral_parse(coll_json.data, coll_json.len, &err);

    if (root == NULL || coll == NULL) {
        return missing("cannot load the root or the collateral from",
                       fixtures_dir());
    }

    test_hex();
    test_time();
    test_quote();
    test_collateral();
    test_blob();
    test_cert();

    printf("1..%d\n", test_no);

    rc = test_failed ? 1 : 0;

    dstack_collateral_free(coll);
    X509_free(root);
    free(quote.data);
    free(blob.data);
    free(coll_json.data);

    return rc;
}
