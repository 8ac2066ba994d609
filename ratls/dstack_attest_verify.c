/*
 * The checks of a parsed dstack attestation: binding, quote and QE report
 * signatures, the PCK chain to the pinned Intel root, the TD policy, the
 * RTMR3 replay, and the TCB level from collateral (see dstack_attest.h).
 * The TCB evaluation follows Intel's QVL (TcbLevelCheck, TdxModuleCheck).
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <jansson.h>

#include "dstack_attest.h"
#include "dstack_hex.h"


#define DSTACK_ADVISORY_LEN      256
#define DSTACK_MAX_LEVELS        64
#define DSTACK_MAX_MODULE_IDS    16


typedef struct {
    u_char      sgx[16];
    u_char      tdx[16];
    unsigned    pcesvn;
    int         status;                   /* dstack_tcb_status_e or -1 */
    char        advisories[DSTACK_ADVISORY_LEN];
} dstack_tcb_level_t;


typedef struct {
    unsigned    isvsvn;
    int         status;
    char        advisories[DSTACK_ADVISORY_LEN];
} dstack_isv_level_t;


typedef struct {
    char                 id[16];
    u_char               mrsigner[48];
    u_char               attributes[8];
    u_char               attributes_mask[8];
    dstack_isv_level_t  *levels;
    size_t               nlevels;
} dstack_module_id_t;


struct dstack_collateral_s {
    STACK_OF(X509)      *tcb_chain;
    STACK_OF(X509)      *qe_chain;
    STACK_OF(X509)      *pck_crl_chain;
    STACK_OF(X509_CRL)  *crls;

    char                *tcb_info;
    size_t               tcb_info_len;
    u_char               tcb_sig[64];
    char                *qe_identity;
    size_t               qe_identity_len;
    u_char               qe_sig[64];

    time_t               tcb_issue;
    time_t               tcb_next;
    u_char               fmspc[6];
    u_char               pce_id[2];
    dstack_module_id_t   module;          /* tdxModule, no levels */
    dstack_module_id_t   module_ids[DSTACK_MAX_MODULE_IDS];
    size_t               nmodule_ids;
    dstack_tcb_level_t  *levels;
    size_t               nlevels;

    time_t               qe_issue;
    time_t               qe_next;
    uint32_t             qe_miscselect;
    uint32_t             qe_miscselect_mask;
    u_char               qe_attributes[16];
    u_char               qe_attributes_mask[16];
    u_char               qe_mrsigner[32];
    unsigned             qe_isvprodid;
    dstack_isv_level_t  *qe_levels;
    size_t               qe_nlevels;
};


typedef struct {
    u_char      fmspc[6];
    u_char      pce_id[2];
    u_char      cpusvn[16];
    unsigned    pcesvn;
} dstack_pck_ext_t;


static void dstack_check_set(dstack_attest_result_t *res, dstack_check_e c,
    dstack_check_status_e s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static EVP_PKEY *dstack_p256_key(const u_char xy[64]);
static int dstack_ecdsa_verify(EVP_PKEY *key, const u_char *msg, size_t len,
    const u_char sig[64]);
static X509 *dstack_known_cert(X509 **known, size_t nknown,
    const u_char *der, long len);
static STACK_OF(X509) *dstack_pem_chain(const u_char *p, size_t n,
    X509 **known, size_t nknown);
static int dstack_verify_chain(X509 *leaf, STACK_OF(X509) *untrusted,
    X509 *root, STACK_OF(X509_CRL) *crls, time_t now, const char **why);
static int dstack_der_next(const u_char **p, const u_char *end,
    u_char *tag, const u_char **val, size_t *len);
static int dstack_pck_ext(X509 *pck, dstack_pck_ext_t *ext);
static STACK_OF(X509) *dstack_check_pck(const dstack_quote_t *q,
    const dstack_attest_opts_t *opts, time_t now,
    dstack_attest_result_t *res, const char **crl_why);
static int dstack_qe_hash(const dstack_quote_t *q, u_char hash[32]);
static void dstack_check_binding(const dstack_attest_t *att,
    dstack_attest_result_t *res);
static void dstack_check_td_policy(const dstack_attest_t *att,
    const dstack_attest_opts_t *opts, dstack_attest_result_t *res);
static void dstack_check_rtmr3(const dstack_attest_t *att,
    dstack_attest_result_t *res);
static void dstack_check_tcb(const dstack_attest_t *att,
    const dstack_attest_opts_t *opts, X509 *pck_leaf, const char *crl_why,
    time_t now, dstack_attest_result_t *res);
static int dstack_tcb_evaluate(const dstack_collateral_t *col,
    const dstack_quote_t *q, const dstack_pck_ext_t *pck,
    dstack_attest_result_t *res);


static const char  *dstack_check_names[DSTACK_CHECK_N] = {
    "binding",
    "quote_signature",
    "qe_report",
    "pck_chain",
    "td_policy",
    "rtmr3",
    "tcb"
};


static const char  *dstack_tcb_names[DSTACK_TCB_N] = {
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked"
};


/* DER of 1.2.840.113741.1.13.1, Intel's SGX extension */
static const u_char  dstack_sgx_oid[] = {
    0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01
};


static const u_char  dstack_intel_qe_vendor[16] = {
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
    0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07
};


const char *
dstack_check_name(dstack_check_e c)
{
    return (unsigned) c < DSTACK_CHECK_N ? dstack_check_names[c] : "?";
}


const char *
dstack_check_status_name(dstack_check_status_e s)
{
    switch (s) {
    case DSTACK_CHECK_PASS:
        return "pass";
    case DSTACK_CHECK_FAIL:
        return "fail";
    case DSTACK_CHECK_SKIPPED:
        return "skipped";
    default:
        return "not run";
    }
}


const char *
dstack_tcb_status_name(dstack_tcb_status_e s)
{
    return (unsigned) s < DSTACK_TCB_N ? dstack_tcb_names[s] : "Unknown";
}


int
dstack_tcb_status_parse(const char *s, size_t len)
{
    int  i;

    for (i = 0; i < DSTACK_TCB_N; i++) {
        if (strlen(dstack_tcb_names[i]) == len
            && memcmp(dstack_tcb_names[i], s, len) == 0)
        {
            return i;
        }
    }

    return -1;
}


static void
dstack_check_set(dstack_attest_result_t *res, dstack_check_e c,
    dstack_check_status_e s, const char *fmt, ...)
{
    va_list  args;

    res->check[c].status = s;

    va_start(args, fmt);
    vsnprintf(res->check[c].reason, DSTACK_ATTEST_REASON_LEN, fmt, args);
    va_end(args);
}


static EVP_PKEY *
dstack_p256_key(const u_char xy[64])
{
    u_char         point[65];
    EVP_PKEY      *key;
    OSSL_PARAM     params[3];
    EVP_PKEY_CTX  *ctx;

    point[0] = 0x04;
    memcpy(point + 1, xy, 64);

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                                 (char *) "prime256v1", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY,
                                                  point, sizeof(point));
    params[2] = OSSL_PARAM_construct_end();

    key = NULL;
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);

    if (ctx == NULL
        || EVP_PKEY_fromdata_init(ctx) <= 0
        || EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) <= 0)
    {
        key = NULL;
    }

    EVP_PKEY_CTX_free(ctx);

    return key;
}


/* ECDSA P-256 / SHA-256 with a raw r || s signature */
static int
dstack_ecdsa_verify(EVP_PKEY *key, const u_char *msg, size_t len,
    const u_char sig[64])
{
    int          rc, dlen;
    BIGNUM      *r, *s;
    u_char      *der;
    ECDSA_SIG   *es;
    EVP_MD_CTX  *md;

    rc = -1;
    der = NULL;
    md = NULL;

    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, 32, NULL);
    s = BN_bin2bn(sig + 32, 32, NULL);

    if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        goto done;
    }

    dlen = i2d_ECDSA_SIG(es, &der);

    if (dlen <= 0) {
        goto done;
    }

    md = EVP_MD_CTX_new();

    if (md != NULL
        && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1
        && EVP_DigestVerify(md, der, (size_t) dlen, msg, len) == 1)
    {
        rc = 0;
    }

done:

    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    ERR_clear_error();

    return rc;
}


/* the certificate among known whose DER is der, or NULL */
static X509 *
dstack_known_cert(X509 **known, size_t nknown, const u_char *der, long len)
{
    int      n;
    size_t   i;
    u_char  *enc, *p;
    X509    *found;

    found = NULL;

    for (i = 0; i < nknown && found == NULL; i++) {
        n = i2d_X509(known[i], NULL);

        if (n != len) {
            continue;
        }

        enc = malloc((size_t) n);

        if (enc == NULL) {
            break;
        }

        p = enc;

        if (i2d_X509(known[i], &p) == n && memcmp(enc, der, (size_t) n) == 0)
        {
            found = known[i];
        }

        free(enc);
    }

    return found;
}


/*
 * The certificates of a PEM chain.  One equal to a known certificate (the
 * pinned root, the collateral's CA) is shared rather than decoded again:
 * decoding dominates the cost of a verification.
 */
static STACK_OF(X509) *
dstack_pem_chain(const u_char *p, size_t n, X509 **known, size_t nknown)
{
    BIO             *bio;
    X509            *x;
    char            *name, *header;
    long             len;
    u_char          *der;
    const u_char    *d;
    STACK_OF(X509)  *chain;

    if (n > INT32_MAX) {
        return NULL;
    }

    bio = BIO_new_mem_buf(p, (int) n);
    chain = sk_X509_new_null();

    if (bio == NULL || chain == NULL) {
        BIO_free(bio);
        sk_X509_free(chain);
        return NULL;
    }

    while (sk_X509_num(chain) < 8
           && PEM_read_bio(bio, &name, &header, &der, &len) == 1)
    {
        x = NULL;

        if (strcmp(name, PEM_STRING_X509) == 0) {
            x = dstack_known_cert(known, nknown, der, len);

            if (x != NULL) {
                X509_up_ref(x);

            } else {
                d = der;
                x = d2i_X509(NULL, &d, len);

                if (x != NULL && d != der + len) {
                    X509_free(x);
                    x = NULL;
                }
            }
        }

        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(der);

        if (x == NULL) {
            continue;
        }

        if (!sk_X509_push(chain, x)) {
            X509_free(x);
            break;
        }
    }

    BIO_free(bio);
    ERR_clear_error();

    if (sk_X509_num(chain) == 0) {
        sk_X509_free(chain);
        return NULL;
    }

    return chain;
}


static int
dstack_verify_chain(X509 *leaf, STACK_OF(X509) *untrusted, X509 *root,
    STACK_OF(X509_CRL) *crls, time_t now, const char **why)
{
    int                  rc, err;
    X509_STORE          *store;
    X509_STORE_CTX      *ctx;
    X509_VERIFY_PARAM   *param;

    rc = -1;
    *why = "out of memory";

    store = X509_STORE_new();
    ctx = X509_STORE_CTX_new();

    if (store == NULL || ctx == NULL || !X509_STORE_add_cert(store, root)) {
        goto done;
    }

    if (!X509_STORE_CTX_init(ctx, store, leaf, untrusted)) {
        goto done;
    }

    param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(param, now);

    if (crls != NULL) {
        X509_STORE_CTX_set0_crls(ctx, crls);
        X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK
                                           | X509_V_FLAG_CRL_CHECK_ALL);
    }

    if (X509_verify_cert(ctx) == 1) {
        rc = 0;

    } else {
        err = X509_STORE_CTX_get_error(ctx);
        *why = X509_verify_cert_error_string(err);
    }

done:

    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    ERR_clear_error();

    return rc;
}


/* one DER TLV with a definite length of at most 4 bytes */
static int
dstack_der_next(const u_char **p, const u_char *end, u_char *tag,
    const u_char **val, size_t *len)
{
    size_t         n, i, l;
    const u_char  *s;

    s = *p;

    if (end - s < 2) {
        return -1;
    }

    *tag = s[0];

    if (s[1] < 0x80) {
        l = s[1];
        s += 2;

    } else {
        n = s[1] & 0x7f;

        if (n == 0 || n > 4 || (size_t) (end - s) < 2 + n) {
            return -1;
        }

        l = 0;

        for (i = 0; i < n; i++) {
            l = (l << 8) | s[2 + i];
        }

        s += 2 + n;
    }

    if (l > (size_t) (end - s)) {
        return -1;
    }

    *val = s;
    *len = l;
    *p = s + l;

    return 0;
}


/* the SVNs, FMSPC and PCE-ID from the PCK certificate's SGX extension */
static int
dstack_pck_ext(X509 *pck, dstack_pck_ext_t *ext)
{
    int                  i, n, have;
    u_char               tag, tg;
    size_t               len, olen, vlen, tlen, l2, v2;
    const u_char        *p, *end, *seq, *oid, *v, *t, *tend, *o2, *s2;
    const u_char        *e, *eend, *val;
    const ASN1_OBJECT   *obj;
    X509_EXTENSION      *x;
    ASN1_OCTET_STRING   *data;

    memset(ext, 0, sizeof(dstack_pck_ext_t));
    have = 0;
    data = NULL;

    n = X509_get_ext_count(pck);

    for (i = 0; i < n; i++) {
        x = X509_get_ext(pck, i);
        obj = X509_EXTENSION_get_object(x);

        if (OBJ_length(obj) == sizeof(dstack_sgx_oid)
            && memcmp(OBJ_get0_data(obj), dstack_sgx_oid,
                      sizeof(dstack_sgx_oid)) == 0)
        {
            data = X509_EXTENSION_get_data(x);
            break;
        }
    }

    if (data == NULL) {
        return -1;
    }

    p = ASN1_STRING_get0_data(data);
    end = p + ASN1_STRING_length(data);

    if (dstack_der_next(&p, end, &tag, &seq, &len) != 0 || tag != 0x30) {
        return -1;
    }

    p = seq;
    end = seq + len;

    while (p < end) {
        if (dstack_der_next(&p, end, &tag, &seq, &len) != 0 || tag != 0x30) {
            return -1;
        }

        t = seq;
        tend = seq + len;

        if (dstack_der_next(&t, tend, &tag, &oid, &olen) != 0 || tag != 0x06
            || dstack_der_next(&t, tend, &tag, &v, &vlen) != 0)
        {
            return -1;
        }

        if (olen != sizeof(dstack_sgx_oid) + 1
            || memcmp(oid, dstack_sgx_oid, sizeof(dstack_sgx_oid)) != 0)
        {
            continue;
        }

        switch (oid[sizeof(dstack_sgx_oid)]) {

        case 2:     /* TCB: SEQUENCE of SEQUENCE { OID, value } */
            if (tag != 0x30) {
                return -1;
            }

            s2 = v;

            while (s2 < v + vlen) {
                if (dstack_der_next(&s2, v + vlen, &tg, &e, &tlen) != 0
                    || tg != 0x30)
                {
                    return -1;
                }

                eend = e + tlen;

                if (dstack_der_next(&e, eend, &tg, &o2, &l2) != 0
                    || tg != 0x06
                    || dstack_der_next(&e, eend, &tg, &val, &v2) != 0)
                {
                    return -1;
                }

                if (l2 != sizeof(dstack_sgx_oid) + 2
                    || memcmp(o2, dstack_sgx_oid, sizeof(dstack_sgx_oid))
                       != 0
                    || o2[sizeof(dstack_sgx_oid)] != 2)
                {
                    continue;
                }

                if (o2[l2 - 1] == 17 && tg == 0x02 && v2 >= 1 && v2 <= 3) {
                    ext->pcesvn = 0;

                    for (len = 0; len < v2; len++) {
                        ext->pcesvn = (ext->pcesvn << 8) | val[len];
                    }

                    have |= 1;

                } else if (o2[l2 - 1] == 18 && tg == 0x04 && v2 == 16) {
                    memcpy(ext->cpusvn, val, 16);
                    have |= 2;
                }
            }

            break;

        case 3:     /* PCE-ID */
            if (tag != 0x04 || vlen != 2) {
                return -1;
            }

            memcpy(ext->pce_id, v, 2);
            have |= 4;
            break;

        case 4:     /* FMSPC */
            if (tag != 0x04 || vlen != 6) {
                return -1;
            }

            memcpy(ext->fmspc, v, 6);
            have |= 8;
            break;

        default:
            break;
        }
    }

    return have == 15 ? 0 : -1;
}


static void
dstack_check_binding(const dstack_attest_t *att, dstack_attest_result_t *res)
{
    const dstack_quote_t  *q;

    q = &att->quote;

    if (att->report_data != NULL
        && memcmp(att->report_data, q->report_data, 64) != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_BINDING, DSTACK_CHECK_FAIL,
                         "the attestation's report_data differs from the "
                         "quote's");
        return;
    }

    if (!att->has_cert) {
        dstack_check_set(res, DSTACK_CHECK_BINDING, DSTACK_CHECK_SKIPPED,
                         "no certificate");
        return;
    }

    if (memcmp(att->expected_rd, q->report_data, 64) != 0) {
        dstack_check_set(res, DSTACK_CHECK_BINDING, DSTACK_CHECK_FAIL,
                         "report_data is not SHA512(\"ratls-cert:\" || "
                         "the certificate's public key)");
        return;
    }

    dstack_check_set(res, DSTACK_CHECK_BINDING, DSTACK_CHECK_PASS,
                     "report_data binds the certificate's public key");
}


static void
dstack_check_td_policy(const dstack_attest_t *att,
    const dstack_attest_opts_t *opts, dstack_attest_result_t *res)
{
    size_t                 i;
    const dstack_quote_t  *q;

    static const u_char  zero[48];

    q = &att->quote;

    if ((q->td_attributes[0] & 0x01) && !opts->allow_debug) {
        dstack_check_set(res, DSTACK_CHECK_TD_POLICY, DSTACK_CHECK_FAIL,
                         "the TD runs in debug mode");
        return;
    }

    if (q->td_attributes[0] & 0xfe) {
        dstack_check_set(res, DSTACK_CHECK_TD_POLICY, DSTACK_CHECK_FAIL,
                         "reserved TD-under-debug attribute bits are set");
        return;
    }

    if (memcmp(q->mr_signer_seam, zero, 48) != 0) {
        dstack_check_set(res, DSTACK_CHECK_TD_POLICY, DSTACK_CHECK_FAIL,
                         "mr_signer_seam is not zero (not Intel's module)");
        return;
    }

    if (q->mr_service_td != NULL) {
        for (i = 0; i < 48; i++) {
            if (q->mr_service_td[i] != 0) {
                dstack_check_set(res, DSTACK_CHECK_TD_POLICY,
                                 DSTACK_CHECK_FAIL,
                                 "mr_service_td is not zero");
                return;
            }
        }
    }

    dstack_check_set(res, DSTACK_CHECK_TD_POLICY, DSTACK_CHECK_PASS,
                     "%s, no SEAM signer%s",
                     (q->td_attributes[0] & 0x01) ? "debug allowed"
                                                  : "not debug",
                     q->mr_service_td != NULL ? ", no service TD" : "");
}


static const dstack_event_t *
dstack_find_event(const dstack_attest_t *att, const char *name)
{
    size_t                 i, n;
    const dstack_event_t  *ev;

    n = strlen(name);

    /* events after system-ready are the application's own */
    for (i = 0; i < att->nevents; i++) {
        ev = &att->events[i];

        if (ev->name_len == 12 && memcmp(ev->name, "system-ready", 12) == 0)
        {
            break;
        }

        if (ev->name_len == n && memcmp(ev->name, name, n) == 0) {
            return ev;
        }
    }

    return NULL;
}


static void
dstack_check_rtmr3(const dstack_attest_t *att, dstack_attest_result_t *res)
{
    u_char                 rtmr3[48];
    const dstack_event_t  *ev, *app;

    if (att->format == DSTACK_ATTEST_FMT_QUOTE
        || (att->format == DSTACK_ATTEST_FMT_LEGACY && att->nevents == 0))
    {
        /* an app_id claim with nothing to check it against is a failure */
        dstack_check_set(res, DSTACK_CHECK_RTMR3,
                         att->has_app_id ? DSTACK_CHECK_FAIL
                                         : DSTACK_CHECK_SKIPPED,
                         "no event log%s", att->has_app_id
                         ? " to match the certificate's app_id" : "");
        return;
    }

    dstack_attest_replay(att->events, att->nevents, rtmr3);
    *dstack_hex_encode(res->rtmr3_replayed, rtmr3, 48) = '\0';

    ev = dstack_find_event(att, "compose-hash");

    if (ev != NULL && ev->payload_len <= 64) {
        *dstack_hex_encode(res->compose_hash, ev->payload,
                           ev->payload_len) = '\0';
    }

    ev = dstack_find_event(att, "instance-id");

    if (ev != NULL && ev->payload_len <= 64) {
        *dstack_hex_encode(res->instance_id, ev->payload,
                           ev->payload_len) = '\0';
    }

    app = dstack_find_event(att, "app-id");

    if (app != NULL && app->payload_len <= 64) {
        *dstack_hex_encode(res->app_id, app->payload, app->payload_len) = '\0';
    }

    if (memcmp(rtmr3, att->quote.rtmr[3], 48) != 0) {
        dstack_check_set(res, DSTACK_CHECK_RTMR3, DSTACK_CHECK_FAIL,
                         "the replay of %zu runtime events differs from "
                         "the quote's RTMR3", att->nevents);
        return;
    }

    if (!att->has_app_id) {
        dstack_check_set(res, DSTACK_CHECK_RTMR3, DSTACK_CHECK_PASS,
                         "%zu events replay to RTMR3%s", att->nevents,
                         att->has_cert ? " (certificate has no app_id)"
                                       : "");
        return;
    }

    if (app == NULL) {
        dstack_check_set(res, DSTACK_CHECK_RTMR3, DSTACK_CHECK_FAIL,
                         "no app-id event to match the certificate's app_id");
        return;
    }

    if (app->payload_len != 20
        || memcmp(app->payload, att->cert_app_id, 20) != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_RTMR3, DSTACK_CHECK_FAIL,
                         "the app-id event differs from the certificate's "
                         "app_id");
        return;
    }

    dstack_check_set(res, DSTACK_CHECK_RTMR3, DSTACK_CHECK_PASS,
                     "%zu events replay to RTMR3, app-id matches the "
                     "certificate", att->nevents);
}


/*
 * The quote's PCK chain to the pinned root.  With collateral, one
 * verification also checks the CRLs; only when that fails is the chain
 * verified again without them, so that a revocation or a stale CRL fails
 * the TCB check (*crl_why) rather than this one.
 */
static STACK_OF(X509) *
dstack_check_pck(const dstack_quote_t *q, const dstack_attest_opts_t *opts,
    time_t now, dstack_attest_result_t *res, const char **crl_why)
{
    int                         i, rc;
    X509                       *pck, *known[8];
    size_t                      nknown;
    const char                 *why;
    STACK_OF(X509)             *chain, *all;
    const dstack_collateral_t  *col;

    col = opts->collateral;
    *crl_why = "no PCK certificate in the quote";
    nknown = 0;

    if (opts->root != NULL) {
        known[nknown++] = opts->root;
    }

    for (i = 0; col != NULL && i < sk_X509_num(col->pck_crl_chain)
                && nknown < 8; i++)
    {
        known[nknown++] = sk_X509_value(col->pck_crl_chain, i);
    }

    chain = dstack_pem_chain(q->pck_chain, q->pck_chain_len, known, nknown);
    pck = chain != NULL ? sk_X509_value(chain, 0) : NULL;

    if (pck == NULL) {
        dstack_check_set(res, DSTACK_CHECK_PCK_CHAIN, DSTACK_CHECK_FAIL,
                         "no PCK certificate in the quote");
        return chain;
    }

    if (opts->root == NULL) {
        *crl_why = "no pinned Intel root configured";
        dstack_check_set(res, DSTACK_CHECK_PCK_CHAIN, DSTACK_CHECK_FAIL,
                         "no pinned Intel root configured");
        return chain;
    }

    rc = -1;
    *crl_why = NULL;

    if (col != NULL) {
        all = sk_X509_dup(chain);

        /* the PCK CRL issuer chain may name a CA that the quote omits */
        for (i = 0; all != NULL && i < sk_X509_num(col->pck_crl_chain); i++)
        {
            sk_X509_push(all, sk_X509_value(col->pck_crl_chain, i));
        }

        rc = dstack_verify_chain(pck, all != NULL ? all : chain, opts->root,
                                 col->crls, now, crl_why);
        sk_X509_free(all);

        if (rc == 0) {
            *crl_why = NULL;
        }
    }

    if (rc != 0) {
        rc = dstack_verify_chain(pck, chain, opts->root, NULL, now, &why);

        if (rc != 0) {
            dstack_check_set(res, DSTACK_CHECK_PCK_CHAIN, DSTACK_CHECK_FAIL,
                             "PCK chain: %s", why);
            return chain;
        }
    }

    dstack_check_set(res, DSTACK_CHECK_PCK_CHAIN, DSTACK_CHECK_PASS,
                     "%d certificates to the pinned root%s",
                     sk_X509_num(chain),
                     (col != NULL && *crl_why == NULL) ? ", none revoked"
                                                       : "");

    return chain;
}


/* SHA256(attestation key || QE auth data), what the QE report must hold */
static int
dstack_qe_hash(const dstack_quote_t *q, u_char hash[32])
{
    int            ok;
    EVP_MD_CTX    *md;
    unsigned int   hlen;

    md = EVP_MD_CTX_new();

    ok = md != NULL
         && EVP_DigestInit_ex(md, EVP_sha256(), NULL)
         && EVP_DigestUpdate(md, q->att_key, 64)
         && EVP_DigestUpdate(md, q->qe_auth, q->qe_auth_len)
         && EVP_DigestFinal_ex(md, hash, &hlen)
         && hlen == 32;

    EVP_MD_CTX_free(md);
    ERR_clear_error();

    return ok ? 0 : -1;
}


int
dstack_attest_verify(const dstack_attest_t *att,
    const dstack_attest_opts_t *opts, dstack_attest_result_t *res)
{
    int                    i;
    X509                  *pck;
    u_char                 hash[32];
    time_t                 now;
    EVP_PKEY              *key;
    unsigned               require;
    const char            *crl_why;
    STACK_OF(X509)        *chain;
    const dstack_quote_t  *q;

    static const u_char  zero[32];

    memset(res, 0, sizeof(dstack_attest_result_t));

    q = &att->quote;
    now = opts->now ? opts->now : time(NULL);
    require = opts->require ? opts->require : DSTACK_REQUIRE_FULL;
    chain = NULL;

    if (att->format == DSTACK_ATTEST_FMT_NONE || q->data == NULL) {
        for (i = 0; i < DSTACK_CHECK_N; i++) {
            dstack_check_set(res, i, DSTACK_CHECK_FAIL, "nothing parsed");
        }

        return -1;
    }

    *dstack_hex_encode(res->mrtd, q->mr_td, 48) = '\0';

    for (i = 0; i < 4; i++) {
        *dstack_hex_encode(res->rtmr[i], q->rtmr[i], 48) = '\0';
    }

    *dstack_hex_encode(res->report_data, q->report_data, 64) = '\0';

    /* 1. binding */

    dstack_check_binding(att, res);

    /* 2. the attestation key signs the header and TD report */

    key = dstack_p256_key(q->att_key);

    if (key == NULL) {
        ERR_clear_error();
        dstack_check_set(res, DSTACK_CHECK_QUOTE_SIG, DSTACK_CHECK_FAIL,
                         "the attestation key is not a P-256 point");

    } else if (dstack_ecdsa_verify(key, q->data, q->signed_len, q->signature)
               != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_QUOTE_SIG, DSTACK_CHECK_FAIL,
                         "bad quote signature over [0, %zu)", q->signed_len);

    } else {
        dstack_check_set(res, DSTACK_CHECK_QUOTE_SIG, DSTACK_CHECK_PASS,
                         "attestation key signs [0, %zu)", q->signed_len);
    }

    EVP_PKEY_free(key);

    /* 4. the PCK chain to the pinned root (before 3, which needs the leaf) */

    chain = dstack_check_pck(q, opts, now, res, &crl_why);
    pck = chain != NULL ? sk_X509_value(chain, 0) : NULL;

    /* 3. the QE report binds the attestation key, the PCK signs it */

    if (memcmp(q->data + 12, dstack_intel_qe_vendor, 16) != 0) {
        dstack_check_set(res, DSTACK_CHECK_QE_REPORT, DSTACK_CHECK_FAIL,
                         "the QE vendor is not Intel");
        goto qe_done;
    }

    if (dstack_qe_hash(q, hash) != 0
        || memcmp(q->qe_report + 320, hash, 32) != 0
        || memcmp(q->qe_report + 352, zero, 32) != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_QE_REPORT, DSTACK_CHECK_FAIL,
                         "QE report_data is not SHA256(attestation key || "
                         "QE auth data)");
        goto qe_done;
    }

    key = pck != NULL ? X509_get0_pubkey(pck) : NULL;

    if (key == NULL) {
        dstack_check_set(res, DSTACK_CHECK_QE_REPORT, DSTACK_CHECK_FAIL,
                         "no PCK key to check the QE report signature");

    } else if (dstack_ecdsa_verify(key, q->qe_report, 384, q->qe_report_sig)
               != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_QE_REPORT, DSTACK_CHECK_FAIL,
                         "bad QE report signature (not the PCK key)");

    } else {
        dstack_check_set(res, DSTACK_CHECK_QE_REPORT, DSTACK_CHECK_PASS,
                         "QE report binds the key, signed by the PCK");
    }

qe_done:

    /* 5, 6, 7 */

    dstack_check_td_policy(att, opts, res);
    dstack_check_rtmr3(att, res);
    dstack_check_tcb(att, opts, pck, crl_why, now, res);

    sk_X509_pop_free(chain, X509_free);
    ERR_clear_error();

    res->ok = 1;

    for (i = 0; i < DSTACK_CHECK_N; i++) {
        if ((require & DSTACK_REQUIRE(i))
            && res->check[i].status != DSTACK_CHECK_PASS
            && res->check[i].status != DSTACK_CHECK_SKIPPED)
        {
            res->ok = 0;
        }
    }

    return res->ok ? 0 : -1;
}


/* ------------------------------------------------------------------ */
/* collateral and the TCB level                                         */


static int
dstack_jhex(json_t *obj, const char *key, u_char *out, size_t n)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (!json_is_string(v)
        || json_string_length(v) != 2 * n
        || dstack_hex_decode(out, n, json_string_value(v), 2 * n) < 0)
    {
        return -1;
    }

    return 0;
}


static int
dstack_jtime(json_t *obj, const char *key, time_t *t)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (!json_is_string(v)) {
        return -1;
    }

    return dstack_time_parse(json_string_value(v), json_string_length(v),
                             t);
}


static int
dstack_jstatus(json_t *level, char *advisories)
{
    size_t       i, n, used, l;
    json_t      *v, *a;
    const char  *s;

    v = json_object_get(level, "tcbStatus");

    if (!json_is_string(v)) {
        return -2;
    }

    advisories[0] = '\0';
    a = json_object_get(level, "advisoryIDs");
    n = json_is_array(a) ? json_array_size(a) : 0;
    used = 0;

    for (i = 0; i < n; i++) {
        if (!json_is_string(json_array_get(a, i))) {
            continue;
        }

        s = json_string_value(json_array_get(a, i));
        l = strlen(s);

        if (used + l + 2 >= DSTACK_ADVISORY_LEN) {
            break;
        }

        if (used) {
            advisories[used++] = ',';
        }

        memcpy(advisories + used, s, l);
        used += l;
        advisories[used] = '\0';
    }

    /* an unknown status only matters if its level is the one selected */
    return dstack_tcb_status_parse(json_string_value(v),
                                   json_string_length(v));
}


static int
dstack_jisv_levels(json_t *arr, dstack_isv_level_t **out, size_t *nout)
{
    size_t               i, n;
    json_t              *lv, *svn;
    dstack_isv_level_t  *levels;

    if (!json_is_array(arr)) {
        return -1;
    }

    n = json_array_size(arr);

    if (n == 0 || n > DSTACK_MAX_LEVELS) {
        return -1;
    }

    levels = calloc(n, sizeof(dstack_isv_level_t));

    if (levels == NULL) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        lv = json_array_get(arr, i);
        svn = json_object_get(json_object_get(lv, "tcb"), "isvsvn");

        if (!json_is_integer(svn) || json_integer_value(svn) < 0
            || json_integer_value(svn) > 0xffff)
        {
            free(levels);
            return -1;
        }

        levels[i].isvsvn = (unsigned) json_integer_value(svn);
        levels[i].status = dstack_jstatus(lv, levels[i].advisories);

        if (levels[i].status == -2) {
            free(levels);
            return -1;
        }
    }

    *out = levels;
    *nout = n;

    return 0;
}


static int
dstack_jcomponents(json_t *arr, u_char out[16])
{
    size_t   i;
    json_t  *svn;

    if (!json_is_array(arr) || json_array_size(arr) != 16) {
        return -1;
    }

    for (i = 0; i < 16; i++) {
        svn = json_object_get(json_array_get(arr, i), "svn");

        if (!json_is_integer(svn) || json_integer_value(svn) < 0
            || json_integer_value(svn) > 255)
        {
            return -1;
        }

        out[i] = (u_char) json_integer_value(svn);
    }

    return 0;
}


static int
dstack_jmodule(json_t *m, dstack_module_id_t *mod)
{
    return (dstack_jhex(m, "mrsigner", mod->mrsigner, 48) == 0
            && dstack_jhex(m, "attributes", mod->attributes, 8) == 0
            && dstack_jhex(m, "attributesMask", mod->attributes_mask, 8) == 0)
           ? 0 : -1;
}


static int
dstack_parse_tcb_info(dstack_collateral_t *col, const char **err)
{
    int                  rc;
    size_t               i, n;
    json_t              *ti, *v, *v2, *lv, *tcb, *ids;
    json_error_t         jerr;
    dstack_module_id_t  *mod;

    rc = -1;
    ti = json_loadb(col->tcb_info, col->tcb_info_len, JSON_REJECT_DUPLICATES,
                    &jerr);

    if (ti == NULL) {
        *err = "tcb_info is not JSON";
        return -1;
    }

    v = json_object_get(ti, "id");

    if (!json_is_string(v) || strcmp(json_string_value(v), "TDX") != 0
        || !json_is_integer(json_object_get(ti, "version"))
        || json_integer_value(json_object_get(ti, "version")) < 3)
    {
        *err = "tcb_info is not TDX TCB info version 3";
        goto done;
    }

    if (dstack_jtime(ti, "issueDate", &col->tcb_issue) != 0
        || dstack_jtime(ti, "nextUpdate", &col->tcb_next) != 0
        || dstack_jhex(ti, "fmspc", col->fmspc, 6) != 0
        || dstack_jhex(ti, "pceId", col->pce_id, 2) != 0)
    {
        *err = "tcb_info lacks dates, fmspc or pceId";
        goto done;
    }

    if (dstack_jmodule(json_object_get(ti, "tdxModule"), &col->module) != 0)
    {
        *err = "tcb_info has a malformed tdxModule";
        goto done;
    }

    ids = json_object_get(ti, "tdxModuleIdentities");
    n = json_is_array(ids) ? json_array_size(ids) : 0;

    if (n > DSTACK_MAX_MODULE_IDS) {
        *err = "tcb_info has too many tdxModuleIdentities";
        goto done;
    }

    for (i = 0; i < n; i++) {
        lv = json_array_get(ids, i);
        mod = &col->module_ids[i];
        v = json_object_get(lv, "id");

        if (!json_is_string(v) || json_string_length(v) >= sizeof(mod->id)
            || dstack_jmodule(lv, mod) != 0
            || dstack_jisv_levels(json_object_get(lv, "tcbLevels"),
                                  &mod->levels, &mod->nlevels) != 0)
        {
            *err = "tcb_info has a malformed tdxModuleIdentity";
            goto done;
        }

        strcpy(mod->id, json_string_value(v));
        col->nmodule_ids++;
    }

    v = json_object_get(ti, "tcbLevels");
    n = json_is_array(v) ? json_array_size(v) : 0;

    if (n == 0 || n > DSTACK_MAX_LEVELS) {
        *err = "tcb_info has no tcbLevels";
        goto done;
    }

    col->levels = calloc(n, sizeof(dstack_tcb_level_t));

    if (col->levels == NULL) {
        *err = "out of memory";
        goto done;
    }

    for (i = 0; i < n; i++) {
        lv = json_array_get(v, i);
        tcb = json_object_get(lv, "tcb");

        if (dstack_jcomponents(json_object_get(tcb, "sgxtcbcomponents"),
                               col->levels[i].sgx) != 0
            || dstack_jcomponents(json_object_get(tcb, "tdxtcbcomponents"),
                                  col->levels[i].tdx) != 0
            || !json_is_integer(json_object_get(tcb, "pcesvn")))
        {
            *err = "tcb_info has a malformed tcbLevel";
            goto done;
        }

        v2 = json_object_get(tcb, "pcesvn");
        col->levels[i].pcesvn = (unsigned) json_integer_value(v2);
        col->levels[i].status = dstack_jstatus(lv, col->levels[i].advisories);

        if (col->levels[i].status == -2) {
            *err = "tcb_info has a tcbLevel without tcbStatus";
            goto done;
        }

        col->nlevels++;
    }

    rc = 0;

done:

    json_decref(ti);
    return rc;
}


static int
dstack_parse_qe_identity(dstack_collateral_t *col, const char **err)
{
    int           rc;
    json_t       *qi, *v;
    u_char        b[4];
    json_error_t  jerr;

    rc = -1;
    qi = json_loadb(col->qe_identity, col->qe_identity_len,
                    JSON_REJECT_DUPLICATES, &jerr);

    if (qi == NULL) {
        *err = "qe_identity is not JSON";
        return -1;
    }

    v = json_object_get(qi, "id");

    if (!json_is_string(v) || strcmp(json_string_value(v), "TD_QE") != 0) {
        *err = "qe_identity is not a TD_QE identity";
        goto done;
    }

    if (dstack_jtime(qi, "issueDate", &col->qe_issue) != 0
        || dstack_jtime(qi, "nextUpdate", &col->qe_next) != 0
        || dstack_jhex(qi, "mrsigner", col->qe_mrsigner, 32) != 0
        || dstack_jhex(qi, "attributes", col->qe_attributes, 16) != 0
        || dstack_jhex(qi, "attributesMask", col->qe_attributes_mask, 16)
           != 0
        || !json_is_integer(json_object_get(qi, "isvprodid")))
    {
        *err = "qe_identity lacks dates, mrsigner, attributes or isvprodid";
        goto done;
    }

    /* miscselect is written as the bytes of a little-endian integer */
    if (dstack_jhex(qi, "miscselect", b, 4) != 0) {
        *err = "qe_identity has a malformed miscselect";
        goto done;
    }

    col->qe_miscselect = (uint32_t) b[0] | (uint32_t) b[1] << 8
                         | (uint32_t) b[2] << 16 | (uint32_t) b[3] << 24;

    if (dstack_jhex(qi, "miscselectMask", b, 4) != 0) {
        *err = "qe_identity has a malformed miscselectMask";
        goto done;
    }

    col->qe_miscselect_mask = (uint32_t) b[0] | (uint32_t) b[1] << 8
                              | (uint32_t) b[2] << 16 | (uint32_t) b[3] << 24;
    v = json_object_get(qi, "isvprodid");
    col->qe_isvprodid = (unsigned) json_integer_value(v);

    if (dstack_jisv_levels(json_object_get(qi, "tcbLevels"), &col->qe_levels,
                           &col->qe_nlevels) != 0)
    {
        *err = "qe_identity has malformed tcbLevels";
        goto done;
    }

    rc = 0;

done:

    json_decref(qi);
    return rc;
}


static int
dstack_jcrl(json_t *doc, const char *key, STACK_OF(X509_CRL) *crls)
{
    size_t         len;
    json_t        *v;
    u_char        *der;
    X509_CRL      *crl;
    const u_char  *p;

    v = json_object_get(doc, key);

    if (!json_is_string(v)) {
        return -1;
    }

    len = json_string_length(v) / 2;

    if (len == 0 || len > DSTACK_ATTEST_MAX_INPUT) {
        return -1;
    }

    der = malloc(len);

    if (der == NULL || dstack_jhex(doc, key, der, len) != 0) {
        free(der);
        return -1;
    }

    p = der;
    crl = d2i_X509_CRL(NULL, &p, (long) len);
    free(der);

    if (crl == NULL || !sk_X509_CRL_push(crls, crl)) {
        X509_CRL_free(crl);
        return -1;
    }

    return 0;
}


static char *
dstack_jdup(json_t *doc, const char *key, size_t *len)
{
    char    *s;
    json_t  *v;

    v = json_object_get(doc, key);

    if (!json_is_string(v)) {
        return NULL;
    }

    *len = json_string_length(v);
    s = malloc(*len + 1);

    if (s != NULL) {
        memcpy(s, json_string_value(v), *len + 1);
    }

    return s;
}


static STACK_OF(X509) *
dstack_jchain(json_t *doc, const char *key)
{
    json_t  *v;

    v = json_object_get(doc, key);

    if (!json_is_string(v)) {
        return NULL;
    }

    return dstack_pem_chain((const u_char *) json_string_value(v),
                            json_string_length(v), NULL, 0);
}


dstack_collateral_t *
dstack_collateral_parse(const u_char *json, size_t len, const char **err)
{
    json_t               *doc;
    json_error_t          jerr;
    dstack_collateral_t  *col;

    if (len > DSTACK_ATTEST_MAX_INPUT) {
        *err = "collateral too large";
        return NULL;
    }

    doc = json_loadb((const char *) json, len, JSON_REJECT_DUPLICATES, &jerr);

    if (doc == NULL || !json_is_object(doc)) {
        json_decref(doc);
        *err = "collateral is not a JSON object";
        return NULL;
    }

    col = calloc(1, sizeof(dstack_collateral_t));

    if (col == NULL) {
        json_decref(doc);
        *err = "out of memory";
        return NULL;
    }

    col->tcb_chain = dstack_jchain(doc, "tcb_info_issuer_chain");
    col->qe_chain = dstack_jchain(doc, "qe_identity_issuer_chain");
    col->pck_crl_chain = dstack_jchain(doc, "pck_crl_issuer_chain");

    if (col->tcb_chain == NULL || col->qe_chain == NULL
        || col->pck_crl_chain == NULL)
    {
        *err = "collateral lacks an issuer chain";
        goto failed;
    }

    col->crls = sk_X509_CRL_new_null();

    if (col->crls == NULL
        || dstack_jcrl(doc, "root_ca_crl", col->crls) != 0
        || dstack_jcrl(doc, "pck_crl", col->crls) != 0)
    {
        *err = "collateral lacks a CRL (root_ca_crl, pck_crl: hex DER)";
        goto failed;
    }

    col->tcb_info = dstack_jdup(doc, "tcb_info", &col->tcb_info_len);
    col->qe_identity = dstack_jdup(doc, "qe_identity", &col->qe_identity_len);

    if (col->tcb_info == NULL || col->qe_identity == NULL) {
        *err = "collateral lacks tcb_info or qe_identity";
        goto failed;
    }

    if (dstack_jhex(doc, "tcb_info_signature", col->tcb_sig, 64) != 0
        || dstack_jhex(doc, "qe_identity_signature", col->qe_sig, 64) != 0)
    {
        *err = "collateral signatures are not 64 bytes of hex";
        goto failed;
    }

    if (dstack_parse_tcb_info(col, err) != 0
        || dstack_parse_qe_identity(col, err) != 0)
    {
        goto failed;
    }

    json_decref(doc);
    ERR_clear_error();

    return col;

failed:

    json_decref(doc);
    dstack_collateral_free(col);
    ERR_clear_error();

    return NULL;
}


void
dstack_collateral_free(dstack_collateral_t *col)
{
    size_t  i;

    if (col == NULL) {
        return;
    }

    sk_X509_pop_free(col->tcb_chain, X509_free);
    sk_X509_pop_free(col->qe_chain, X509_free);
    sk_X509_pop_free(col->pck_crl_chain, X509_free);
    sk_X509_CRL_pop_free(col->crls, X509_CRL_free);
    free(col->tcb_info);
    free(col->qe_identity);
    free(col->levels);
    free(col->qe_levels);

    for (i = 0; i < col->nmodule_ids; i++) {
        free(col->module_ids[i].levels);
    }

    free(col);
}


static int
dstack_has_token(const char *list, const char *tok, size_t l)
{
    const char  *p, *c;

    for (p = list; *p != '\0'; p = (*c == ',') ? c + 1 : c) {
        c = strchr(p, ',');

        if (c == NULL) {
            c = p + strlen(p);
        }

        if ((size_t) (c - p) == l && strncmp(p, tok, l) == 0) {
            return 1;
        }
    }

    return 0;
}


/* appends the comma-separated ids of more that out does not list yet */
static void
dstack_add_advisories(char *out, size_t size, const char *more)
{
    size_t       used, l;
    const char  *p, *c;

    used = strlen(out);

    for (p = more; *p != '\0'; p = (*c == ',') ? c + 1 : c) {
        c = strchr(p, ',');

        if (c == NULL) {
            c = p + strlen(p);
        }

        l = (size_t) (c - p);

        if (l == 0 || dstack_has_token(out, p, l)) {
            continue;
        }

        if (used + l + 2 >= size) {
            return;
        }

        if (used) {
            out[used++] = ',';
        }

        memcpy(out + used, p, l);
        used += l;
        out[used] = '\0';
    }
}


/* Intel's convergence of a TCB level with the module's or the QE's */
static int
dstack_tcb_converge(int tcb, int other)
{
    if (other == DSTACK_TCB_OUT_OF_DATE) {
        if (tcb == DSTACK_TCB_UP_TO_DATE
            || tcb == DSTACK_TCB_SW_HARDENING_NEEDED)
        {
            return DSTACK_TCB_OUT_OF_DATE;
        }

        if (tcb == DSTACK_TCB_CONFIGURATION_NEEDED
            || tcb == DSTACK_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED)
        {
            return DSTACK_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED;
        }
    }

    if (other == DSTACK_TCB_REVOKED) {
        return DSTACK_TCB_REVOKED;
    }

    return tcb;
}


static int
dstack_tcb_evaluate(const dstack_collateral_t *col, const dstack_quote_t *q,
    const dstack_pck_ext_t *pck, dstack_attest_result_t *res)
{
    char                       id[16];
    size_t                     i, j, start;
    unsigned                   isvsvn, qe_svn;
    uint32_t                   misc;
    int                        module_status, qe_status, status;
    const u_char              *qe;
    const dstack_isv_level_t  *ml, *ql;
    const dstack_tcb_level_t  *sgx_level, *tdx_level, *lv;
    const dstack_module_id_t  *mod;

    if (memcmp(pck->fmspc, col->fmspc, 6) != 0
        || memcmp(pck->pce_id, col->pce_id, 2) != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "the TCB info is for another FMSPC or PCE");
        return -1;
    }

    /* the QE report against the QE identity */

    qe = q->qe_report;
    misc = (uint32_t) qe[16] | (uint32_t) qe[17] << 8
           | (uint32_t) qe[18] << 16 | (uint32_t) qe[19] << 24;

    if (memcmp(qe + 128, col->qe_mrsigner, 32) != 0
        || (unsigned) (qe[256] | qe[257] << 8) != col->qe_isvprodid
        || (misc & col->qe_miscselect_mask)
           != (col->qe_miscselect & col->qe_miscselect_mask))
    {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "the QE is not the one the QE identity names");
        return -1;
    }

    for (i = 0; i < 16; i++) {
        if ((qe[48 + i] & col->qe_attributes_mask[i])
            != (col->qe_attributes[i] & col->qe_attributes_mask[i]))
        {
            dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                             "QE attributes differ from the QE identity");
            return -1;
        }
    }

    qe_svn = (unsigned) (qe[258] | qe[259] << 8);
    ql = NULL;

    for (i = 0; i < col->qe_nlevels; i++) {
        if (qe_svn >= col->qe_levels[i].isvsvn) {
            ql = &col->qe_levels[i];
            break;
        }
    }

    if (ql == NULL || ql->status < 0) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "QE ISVSVN %u is not supported", qe_svn);
        return -1;
    }

    qe_status = ql->status;

    /* the platform level: SGX by the PCK, then TDX by TEE_TCB_SVN */

    sgx_level = NULL;
    tdx_level = NULL;
    start = q->tee_tcb_svn[1] > 0 ? 2 : 0;

    for (i = 0; i < col->nlevels && tdx_level == NULL; i++) {
        lv = &col->levels[i];

        if (pck->pcesvn < lv->pcesvn) {
            continue;
        }

        for (j = 0; j < 16; j++) {
            if (pck->cpusvn[j] < lv->sgx[j]) {
                break;
            }
        }

        if (j < 16) {
            continue;
        }

        if (sgx_level == NULL) {
            sgx_level = lv;
        }

        for (j = start; j < 16; j++) {
            if (q->tee_tcb_svn[j] < lv->tdx[j]) {
                break;
            }
        }

        if (j == 16) {
            tdx_level = lv;
        }
    }

    if (sgx_level == NULL) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "the platform TCB matches no SGX level (not "
                         "supported)");
        return -1;
    }

    if (tdx_level == NULL || tdx_level->status < 0) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "TEE_TCB_SVN matches no TDX level (not supported)");
        return -1;
    }

    /* the TDX module identity */

    isvsvn = q->tee_tcb_svn[0];
    module_status = DSTACK_TCB_UP_TO_DATE;
    mod = &col->module;
    ml = NULL;

    if (q->tee_tcb_svn[1] > 0) {
        snprintf(id, sizeof(id), "TDX_%02X", q->tee_tcb_svn[1]);
        mod = NULL;

        for (i = 0; i < col->nmodule_ids; i++) {
            if (strcasecmp(col->module_ids[i].id, id) == 0) {
                mod = &col->module_ids[i];
                break;
            }
        }

        if (mod == NULL) {
            dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                             "no TDX module identity %s", id);
            return -1;
        }

        for (i = 0; i < mod->nlevels; i++) {
            if (isvsvn >= mod->levels[i].isvsvn) {
                ml = &mod->levels[i];
                break;
            }
        }

        if (ml == NULL || ml->status < 0) {
            dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                             "TDX module ISVSVN %u is not supported", isvsvn);
            return -1;
        }

        module_status = ml->status;
    }

    if (memcmp(q->mr_signer_seam, mod->mrsigner, 48) != 0) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "TDX module signer differs from the TCB info");
        return -1;
    }

    for (i = 0; i < 8; i++) {
        if ((q->seam_attributes[i] & mod->attributes_mask[i])
            != (mod->attributes[i] & mod->attributes_mask[i]))
        {
            dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                             "TDX module attributes differ from the TCB "
                             "info");
            return -1;
        }
    }

    status = dstack_tcb_converge(tdx_level->status, module_status);
    status = dstack_tcb_converge(status, qe_status);

    dstack_add_advisories(res->advisory_ids, sizeof(res->advisory_ids),
                          tdx_level->advisories);

    if (ml != NULL) {
        dstack_add_advisories(res->advisory_ids, sizeof(res->advisory_ids),
                          ml->advisories);
    }

    dstack_add_advisories(res->advisory_ids, sizeof(res->advisory_ids),
                          ql->advisories);

    return status;
}


static void
dstack_check_tcb(const dstack_attest_t *att, const dstack_attest_opts_t *opts,
    X509 *pck_leaf, const char *crl_why, time_t now,
    dstack_attest_result_t *res)
{
    int                         status;
    X509                       *leaf;
    unsigned                    accept;
    EVP_PKEY                   *key;
    const char                 *why;
    dstack_pck_ext_t            pck;
    const dstack_collateral_t  *col;

    col = opts->collateral;
    accept = opts->tcb_accept ? opts->tcb_accept : DSTACK_TCB_ACCEPT_DEFAULT;

    if (col == NULL) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_SKIPPED,
                         "no collateral");
        return;
    }

    if (opts->root == NULL) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "no pinned Intel root configured");
        return;
    }

    if (now < col->tcb_issue || now < col->qe_issue) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "collateral is not yet valid at this time");
        return;
    }

    if (now > col->tcb_next || now > col->qe_next) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "collateral has expired (nextUpdate passed)");
        return;
    }

    /* TCB info and QE identity: signed by a certificate Intel's root signs */

    leaf = sk_X509_value(col->tcb_chain, 0);

    if (dstack_verify_chain(leaf, col->tcb_chain, opts->root, col->crls, now,
                            &why) != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "TCB info issuer chain: %s", why);
        return;
    }

    key = X509_get0_pubkey(leaf);

    if (key == NULL
        || dstack_ecdsa_verify(key, (const u_char *) col->tcb_info,
                               col->tcb_info_len, col->tcb_sig) != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "bad TCB info signature");
        return;
    }

    leaf = sk_X509_value(col->qe_chain, 0);

    if (dstack_verify_chain(leaf, col->qe_chain, opts->root, col->crls, now,
                            &why) != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "QE identity issuer chain: %s", why);
        return;
    }

    key = X509_get0_pubkey(leaf);

    if (key == NULL
        || dstack_ecdsa_verify(key, (const u_char *) col->qe_identity,
                               col->qe_identity_len, col->qe_sig) != 0)
    {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "bad QE identity signature");
        return;
    }

    /* the PCK chain against the CRLs, verified by dstack_check_pck() */

    if (pck_leaf == NULL) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "%s", crl_why != NULL ? crl_why
                                               : "no PCK certificate");
        return;
    }

    if (crl_why != NULL) {
        if (strstr(crl_why, "revoked") != NULL) {
            snprintf(res->tcb_status, sizeof(res->tcb_status), "Revoked");
        }

        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "PCK chain with CRLs: %s", crl_why);
        return;
    }

    leaf = pck_leaf;

    if (dstack_pck_ext(leaf, &pck) != 0) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "the PCK certificate has no usable SGX extension");
        return;
    }

    status = dstack_tcb_evaluate(col, &att->quote, &pck, res);

    if (status < 0) {
        return;
    }

    snprintf(res->tcb_status, sizeof(res->tcb_status), "%s",
             dstack_tcb_status_name(status));

    if (!(accept & DSTACK_TCB_ACCEPT(status))) {
        dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_FAIL,
                         "TCB status %s is not accepted",
                         dstack_tcb_status_name(status));
        return;
    }

    dstack_check_set(res, DSTACK_CHECK_TCB, DSTACK_CHECK_PASS,
                     "TCB status %s", dstack_tcb_status_name(status));
}
