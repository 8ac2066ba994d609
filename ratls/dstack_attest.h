/*
 * Offline verification of the TDX attestation that a dstack RA-TLS
 * certificate carries (docs/attestation.md).  Plain C over OpenSSL 3 and
 * jansson, no nginx headers, no global state, no blocking I/O outside
 * dstack_attest_load_file(): callers pass buffers.
 *
 * Flow:
 *     dstack_attest_init(&att);
 *     dstack_attest_parse_cert(leaf, &att, &err)       (or _parse_blob)
 *     dstack_attest_verify(&att, &opts, &res);
 *     ... read res.check[], res.mrtd, res.app_id, res.tcb_status ...
 *     dstack_attest_free(&att);
 *
 * Parsed data points into the caller's buffer (or the certificate), which
 * must outlive the dstack_attest_t; a few decoded values live in an arena
 * that dstack_attest_free() releases.
 */

#ifndef _DSTACK_ATTEST_H_INCLUDED_
#define _DSTACK_ATTEST_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>
#include <openssl/x509.h>

#include "dstack_time.h"


#pragma GCC visibility push(hidden)


#define DSTACK_ATTEST_MAX_EVENTS       128
#define DSTACK_ATTEST_MAX_INPUT        (1024 * 1024)
#define DSTACK_ATTEST_REASON_LEN       160
#define DSTACK_ATTEST_MR_HEX           (2 * 48 + 1)
#define DSTACK_ATTEST_RD_HEX           (2 * 64 + 1)
#define DSTACK_ATTEST_ID_HEX           (2 * 64 + 1)

#define DSTACK_RUNTIME_EVENT_TYPE      0x08000001


/* TDX quote v4/v5, parsed in place */
typedef struct {
    const u_char       *data;
    size_t              len;            /* without trailing zero bytes */

    uint16_t            version;        /* 4 or 5 */
    uint16_t            att_key_type;   /* 2: ECDSA P-256 */
    uint32_t            tee_type;       /* 0x81: TDX */
    uint16_t            body_type;      /* 2: TD 1.0, 3: TD 1.5 */

    size_t              report_off;     /* 48, or 54 for v5 */
    size_t              signed_len;     /* 632, 638 or 702 */

    const u_char       *tee_tcb_svn;    /* 16 */
    const u_char       *mr_seam;        /* 48 */
    const u_char       *mr_signer_seam; /* 48 */
    const u_char       *seam_attributes;/* 8 */
    const u_char       *td_attributes;  /* 8 */
    const u_char       *mr_td;          /* 48 */
    const u_char       *rtmr[4];        /* 48 each */
    const u_char       *report_data;    /* 64 */
    const u_char       *mr_service_td;  /* 48, TD 1.5 only, else NULL */

    const u_char       *signature;      /* 64: r || s */
    const u_char       *att_key;        /* 64: x || y */
    const u_char       *qe_report;      /* 384: SGX enclave report */
    const u_char       *qe_report_sig;  /* 64 */
    const u_char       *qe_auth;
    size_t              qe_auth_len;
    uint16_t            pck_cert_type;  /* 5: PEM chain */
    const u_char       *pck_chain;
    size_t              pck_chain_len;
} dstack_quote_t;


typedef struct {
    const u_char       *name;
    size_t              name_len;
    const u_char       *payload;
    size_t              payload_len;
    unsigned            digest_version; /* 1: binary, 2: canonical JSON */
} dstack_event_t;


typedef enum {
    DSTACK_ATTEST_FMT_NONE = 0,
    DSTACK_ATTEST_FMT_QUOTE,            /* a bare quote */
    DSTACK_ATTEST_FMT_V0,               /* .8, SCALE */
    DSTACK_ATTEST_FMT_V1,               /* .8, MessagePack */
    DSTACK_ATTEST_FMT_LEGACY            /* .1 quote + .2 JSON event log */
} dstack_attest_fmt_e;


typedef struct {
    dstack_attest_fmt_e  format;
    dstack_quote_t       quote;

    const u_char        *report_data;   /* the blob's copy, 64, or NULL */
    const u_char        *config;
    size_t               config_len;

    dstack_event_t       events[DSTACK_ATTEST_MAX_EVENTS];
    size_t               nevents;

    /* from the certificate, when parsed from one */
    unsigned             has_cert:1;
    unsigned             has_app_id:1;
    u_char               cert_app_id[20];
    u_char               expected_rd[64];   /* SHA512("ratls-cert:"||SPKI) */

    u_char              *arena;
    size_t               arena_size;
    size_t               arena_used;
} dstack_attest_t;


typedef enum {
    DSTACK_CHECK_BINDING = 0,       /* report_data == SHA512(tag || SPKI) */
    DSTACK_CHECK_QUOTE_SIG,         /* attestation key signs the quote */
    DSTACK_CHECK_QE_REPORT,         /* QE report binds the key, PCK signs */
    DSTACK_CHECK_PCK_CHAIN,         /* PCK chain to the pinned Intel root */
    DSTACK_CHECK_TD_POLICY,         /* no debug, no SEAM signer, no svc TD */
    DSTACK_CHECK_RTMR3,             /* replay == RTMR3, app-id == .3 */
    DSTACK_CHECK_TCB,               /* collateral and TCB level */
    DSTACK_CHECK_N
} dstack_check_e;

#define DSTACK_REQUIRE(c)          (1u << (c))
#define DSTACK_REQUIRE_BIND                                                  \
    (DSTACK_REQUIRE(DSTACK_CHECK_BINDING) | DSTACK_REQUIRE(DSTACK_CHECK_RTMR3))
#define DSTACK_REQUIRE_FULL        ((1u << DSTACK_CHECK_N) - 1)


typedef enum {
    DSTACK_CHECK_NOT_RUN = 0,
    DSTACK_CHECK_PASS,
    DSTACK_CHECK_FAIL,
    DSTACK_CHECK_SKIPPED
} dstack_check_status_e;


typedef enum {
    DSTACK_TCB_UP_TO_DATE = 0,
    DSTACK_TCB_SW_HARDENING_NEEDED,
    DSTACK_TCB_CONFIGURATION_NEEDED,
    DSTACK_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED,
    DSTACK_TCB_OUT_OF_DATE,
    DSTACK_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED,
    DSTACK_TCB_REVOKED,
    DSTACK_TCB_N
} dstack_tcb_status_e;

#define DSTACK_TCB_ACCEPT(s)       (1u << (s))
/* everything but Revoked, as Intel's QVL leaves that choice to callers */
#define DSTACK_TCB_ACCEPT_DEFAULT                                            \
    (((1u << DSTACK_TCB_N) - 1) & ~DSTACK_TCB_ACCEPT(DSTACK_TCB_REVOKED))


typedef struct {
    dstack_check_status_e  status;
    char                   reason[DSTACK_ATTEST_REASON_LEN];
} dstack_check_t;


typedef struct {
    dstack_check_t   check[DSTACK_CHECK_N];
    int              ok;            /* every required check passed */

    /* lowercase hex, empty when absent */
    char             mrtd[DSTACK_ATTEST_MR_HEX];
    char             rtmr[4][DSTACK_ATTEST_MR_HEX];
    char             report_data[DSTACK_ATTEST_RD_HEX];
    char             rtmr3_replayed[DSTACK_ATTEST_MR_HEX];
    char             compose_hash[DSTACK_ATTEST_ID_HEX];
    char             instance_id[DSTACK_ATTEST_ID_HEX];
    char             app_id[DSTACK_ATTEST_ID_HEX];
    char             tcb_status[48];        /* "UpToDate", ... or "" */
    char             advisory_ids[256];     /* comma separated */
} dstack_attest_result_t;


/* parsed collateral in the JSON shape of dcap-qvl's QuoteCollateralV3 */
typedef struct dstack_collateral_s  dstack_collateral_t;


typedef struct {
    X509                       *root;       /* pinned Intel SGX Root CA */
    const dstack_collateral_t  *collateral; /* NULL: TCB check skipped */
    time_t                      now;        /* 0: time(NULL) */
    unsigned                    require;    /* 0: DSTACK_REQUIRE_FULL */
    unsigned                    tcb_accept; /* 0: _TCB_ACCEPT_DEFAULT */
    unsigned                    allow_debug:1;
} dstack_attest_opts_t;


void dstack_attest_init(dstack_attest_t *att);
void dstack_attest_free(dstack_attest_t *att);

/*
 * Parses a TDX quote v4/v5 in place.  Trailing zero bytes are tolerated;
 * truncation, bad inner lengths, other versions, TEE or key types fail
 * with a static reason in *err.
 */
int dstack_attest_parse_quote(const u_char *data, size_t len,
    dstack_quote_t *q, const char **err);

/*
 * Parses a bare quote, a V0 (SCALE) or V1 (MessagePack) attestation,
 * picked by the first bytes.
 */
int dstack_attest_parse_blob(const u_char *data, size_t len,
    dstack_attest_t *att, const char **err);

/* legacy `.1` quote plus an optional `.2` JSON event log */
int dstack_attest_parse_legacy(const u_char *quote, size_t quote_len,
    const u_char *event_log, size_t event_log_len, dstack_attest_t *att,
    const char **err);

/*
 * Reads `.8` (or the legacy `.1`/`.2`) from a certificate, plus `.3` and
 * the binding hash of its SubjectPublicKeyInfo.  The certificate must
 * outlive att.  Clears OpenSSL's error queue on failure.
 */
int dstack_attest_parse_cert(X509 *leaf, dstack_attest_t *att,
    const char **err);

/* sets the certificate part of att: binding hash and optional app_id */
int dstack_attest_set_binding(dstack_attest_t *att, const u_char *spki_der,
    size_t spki_len, const u_char *app_id);

/*
 * Runs every check and fills res; returns 0 when all required checks
 * passed, -1 otherwise (res->ok says the same).
 */
int dstack_attest_verify(const dstack_attest_t *att,
    const dstack_attest_opts_t *opts, dstack_attest_result_t *res);

/*
 * Collateral: the JSON document (pck_crl_issuer_chain, root_ca_crl,
 * pck_crl, tcb_info_issuer_chain, tcb_info, tcb_info_signature,
 * qe_identity_issuer_chain, qe_identity, qe_identity_signature).  Parsed
 * once, then shared read-only by any number of verifications.
 */
dstack_collateral_t *dstack_collateral_parse(const u_char *json, size_t len,
    const char **err);
void dstack_collateral_free(dstack_collateral_t *col);

/* replays events into a 48-byte RTMR value */
void dstack_attest_replay(const dstack_event_t *events, size_t n,
    u_char rtmr[48]);
/* one runtime event's digest, as extended into RTMR3 */
void dstack_attest_event_digest(const dstack_event_t *ev, u_char d[48]);

const char *dstack_check_name(dstack_check_e c);
const char *dstack_check_status_name(dstack_check_status_e s);
const char *dstack_tcb_status_name(dstack_tcb_status_e s);
int dstack_tcb_status_parse(const char *s, size_t len);

/* blocking helpers for configuration time and the CLI */
int dstack_attest_load_file(const char *path, u_char **data, size_t *len,
    size_t max);
X509 *dstack_attest_load_root(const char *path, const char **err);


#pragma GCC visibility pop


#endif /* _DSTACK_ATTEST_H_INCLUDED_ */
