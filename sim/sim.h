/*
 * dstack-sim: a simulator of the dstack guest agent (dstack.sock) for
 * tests and demos.  It issues RA-TLS certificate chains with dstack's
 * exact extension encodings (DESIGN §3) under a KMS root that is kept in
 * a state directory, so several simulated CVMs can share one root.
 */

#ifndef _SIM_H_INCLUDED_
#define _SIM_H_INCLUDED_


#include <signal.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "dstack_hex.h"


#define SIM_ID_LEN            20
#define SIM_SUBJECT_MAX       255
#define SIM_ALT_NAMES_MAX     32
#define SIM_ALT_NAME_MAX      253
#define SIM_CHAIN_MAX         3

/* dstack's extension arc; the suffixes below are appended to it */
#define SIM_OID_ARC           "1.3.6.1.4.1.62397.1"
#define SIM_EXT_APP_ID        3
#define SIM_EXT_USAGE         4
#define SIM_EXT_ATTESTATION   8


/* how the leaf's app_id (.3) extension is encoded; see sim_cert.c */
typedef enum {
    SIM_APP_ID_NORMAL = 0,
    SIM_APP_ID_NONE,
    SIM_APP_ID_LEN,
    SIM_APP_ID_WRAP_SINGLE,
    SIM_APP_ID_DUP,
    SIM_APP_ID_TRAILING,
    SIM_APP_ID_UTF8,
    SIM_APP_ID_RAW
} sim_app_id_variant_e;


/*
 * The leaf extension hook.  sim_cert_leaf() calls it once, after the
 * standard extensions are in place and before the leaf is signed, with
 * the DER of the leaf's SubjectPublicKeyInfo: the bytes a dstack quote
 * binds to (report_data = SHA512("ratls-cert:" || spki)).  The hook adds
 * its own extensions, typically the attestation (.8) one, with
 * sim_cert_add_wrapped() or sim_cert_add_ext().  It returns 0 or -1.
 */
typedef int (*sim_cert_hook_pt)(X509 *leaf, const u_char *spki,
    size_t spki_len, void *data);


typedef struct {
    const char             *subject;
    const char            **alt_names;
    size_t                  nalt_names;
    time_t                  not_before;
    time_t                  not_after;

    /* NULL: the leaf has no app_id extension at all */
    const u_char           *app_id;
    sim_app_id_variant_e    variant;
    size_t                  variant_len;
    const u_char           *raw;
    size_t                  raw_len;

    sim_cert_hook_pt        hook;
    void                   *hook_data;

    unsigned                server_auth:1;
    unsigned                client_auth:1;
} sim_leaf_t;


typedef struct {
    EVP_PKEY               *key;
    X509                   *cert;
} sim_ca_t;


typedef struct {
    const char             *state_dir;
    const char             *app_name;
    u_char                  app_id[SIM_ID_LEN];
    u_char                  instance_id[SIM_ID_LEN];
    u_char                  compose_hash[32];

    sim_ca_t                root;       /* KMS root, kms profile only */
    sim_ca_t                ca;         /* App CA or the local CA */

    /* called for leaves requested with usage_ra_tls (--quote-template) */
    sim_cert_hook_pt        ra_tls_hook;
    void                   *ra_tls_data;
    u_char                 *quote_template;
    size_t                  quote_template_len;

    unsigned                kms:1;
} sim_ctx_t;


/* PEM strings of one issued leaf, leaf first in the chain */
typedef struct {
    char                   *key;
    char                   *chain[SIM_CHAIN_MAX];
    size_t                  nchain;
} sim_pem_t;


typedef struct {
    const char             *method;
    const char             *path;
    const char             *query;      /* NULL when absent */
    const char             *body;
    size_t                  body_len;
} sim_request_t;


typedef struct {
    int                     status;
    char                   *body;       /* malloc()ed JSON */
    size_t                  len;
    const char             *allow;      /* Allow header for a 405 */
} sim_response_t;


typedef void (*sim_handler_pt)(sim_request_t *r, sim_response_t *resp,
    void *data);


/* sim_cert.c */
int sim_ctx_init(sim_ctx_t *ctx);
void sim_ctx_free(sim_ctx_t *ctx);
int sim_root_path(const char *dir, char *path, size_t size);
int sim_issue(sim_ctx_t *ctx, const sim_leaf_t *lf, sim_pem_t *pem);
void sim_pem_free(sim_pem_t *pem);
int sim_cert_leaf(const sim_leaf_t *lf, sim_ca_t *issuer, EVP_PKEY **pkey,
    X509 **pcert);
int sim_cert_add_ext(X509 *x, int suffix, const u_char *content,
    size_t len);
int sim_cert_add_wrapped(X509 *x, int suffix, const u_char *payload,
    size_t len);
int sim_write_file(const char *path, const char *data, size_t len,
    mode_t mode);

/* sim_attest.c */
int sim_attest_load(sim_ctx_t *ctx, const char *path);
int sim_attest_hook(X509 *leaf, const u_char *spki, size_t spki_len,
    void *data);

/* sim_http.c */
int sim_http_listen(const char *path);
int sim_http_run(int fd, sim_handler_pt handler, void *data,
    volatile sig_atomic_t *stop);

/* sim_api.c */
void sim_api_handler(sim_request_t *r, sim_response_t *resp, void *data);

/* sim_util.c */
void sim_log(const char *fmt, ...);


#endif /* _SIM_H_INCLUDED_ */
