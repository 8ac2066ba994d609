/*
 * ngx_dstack_auth_module: authenticates inbound callers by the app_id in
 * their RA-TLS client certificate (DESIGN section 5), and by the TDX
 * attestation it carries (docs/attestation.md, "nginx").
 *
 * The identity is read only from a certificate that nginx verified to the
 * configured root; no request header can supply or override it.
 *
 * An attestation is verified at most once per connection (the result
 * hangs off the connection's pool) and, with a cache zone, once per
 * certificate across workers: the zone maps the leaf's SHA-256 to the
 * verification summary, measurements included.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "dstack_ratls.h"
#include "dstack_header.h"
#include "dstack_attest_policy.h"
#include "ngx_dstack_metrics.h"


#define NGX_HTTP_DSTACK_AUTH_ALLOW_UNSET  0
#define NGX_HTTP_DSTACK_AUTH_ALLOW_NONE   1
#define NGX_HTTP_DSTACK_AUTH_ALLOW_ANY    2
#define NGX_HTTP_DSTACK_AUTH_ALLOW_LIST   3

/* where a request's attestation came from */
#define NGX_HTTP_DSTACK_AUTH_ATTEST_NONE        0
#define NGX_HTTP_DSTACK_AUTH_ATTEST_NO_CERT     1
#define NGX_HTTP_DSTACK_AUTH_ATTEST_MISS        2
#define NGX_HTTP_DSTACK_AUTH_ATTEST_HIT         3
#define NGX_HTTP_DSTACK_AUTH_ATTEST_CONNECTION  4

/* a cache key: the leaf's SHA-256, then a prefix of the verifier's */
#define NGX_HTTP_DSTACK_AUTH_KEY_LEN            (32 + 16)

#define NGX_HTTP_DSTACK_AUTH_CACHE_VALID        600

/* what a request header's name is to this module */
#define NGX_HTTP_DSTACK_AUTH_HEADER_KEEP        0
#define NGX_HTTP_DSTACK_AUTH_HEADER_IDENTITY    1
#define NGX_HTTP_DSTACK_AUTH_HEADER_UNCLEAR     2

/* a certificate header holds the leaf and at most this many CAs */
#define NGX_HTTP_DSTACK_AUTH_CHAIN_MAX          4


typedef struct {
    ngx_str_t                  root_file;
    ngx_str_t                  collateral_file;
    ngx_str_t                  time;
    dstack_attest_opts_t       opts;
    u_char                     verifier[32];   /* names the settings */

    ngx_shm_zone_t            *cache;
    time_t                     cache_valid;

    ngx_shm_zone_t            *metrics;

    ngx_flag_t                 used;           /* some location checks */
} ngx_http_dstack_auth_main_conf_t;


typedef struct {
    ngx_flag_t                 enable;
    ngx_uint_t                 allow_mode;
    ngx_array_t               *allow;          /* of DSTACK_APP_ID_LEN */
    ngx_flag_t                 auth_request;
    ngx_str_t                  request_root;   /* dstack_auth_request_root */
    X509_STORE                *request_store;
    ngx_uint_t                 attestation;    /* dstack_policy_mode_e */
    ngx_uint_t                 tcb_accept;     /* DSTACK_TCB_ACCEPT() bits */
} ngx_http_dstack_auth_loc_conf_t;


/* a connection's verification, from its pool or the request's */
typedef struct {
    ngx_uint_t                 source;         /* _ATTEST_MISS or _HIT */
    dstack_attest_summary_t    summary;
} ngx_http_dstack_auth_attest_t;


/* the verify callback a server's SSL_CTX had before ours */
typedef struct {
    SSL_verify_cb              callback;
} ngx_http_dstack_auth_verify_t;


typedef struct {
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                queue;          /* most recently used first */
} ngx_http_dstack_auth_cache_sh_t;


typedef struct {
    ngx_http_dstack_auth_cache_sh_t  *sh;
    ngx_slab_pool_t                  *shpool;
} ngx_http_dstack_auth_cache_t;


typedef struct {
    ngx_rbtree_node_t          node;
    ngx_queue_t                queue;
    time_t                     expire;
    u_char                     key[NGX_HTTP_DSTACK_AUTH_KEY_LEN];
    dstack_attest_summary_t    summary;
} ngx_http_dstack_auth_cache_node_t;


/*
 * What the client certificate says, kept on the connection (its pool,
 * found again by the cleanup handler) so that a keep-alive connection's
 * later requests do not parse the certificate again, nor ask again
 * whether it was verified for the server that the last request went to
 * (the verify result and the certificate of a connection do not change).
 */
typedef struct {
    X509                           *cert;
    ngx_http_ssl_srv_conf_t        *sscf;      /* what error answers */
    const char                     *error;
    ngx_uint_t                      status;
    dstack_ratls_rc_e               rc;        /* of dstack_ratls_app_id() */
    size_t                          usage_len;
    ngx_uint_t                      has_usage;
    u_char                          id[DSTACK_APP_ID_LEN];
    u_char                          hex[DSTACK_APP_ID_HEX_LEN];
    u_char                          usage_buf[DSTACK_USAGE_MAX_LEN + 1];
} ngx_http_dstack_auth_cert_id_t;


/*
 * A request's identity: app_id, usage and id point into the certificate
 * identity above, which outlives the request (the connection's, or one
 * in the request's pool for a certificate header).
 */
typedef struct {
    ngx_str_t                       app_id;    /* hex */
    ngx_str_t                       usage;
    const char                     *error;     /* why there is no app_id */
    ngx_uint_t                      status;    /* 401, or 421 */
    char                           *deny;      /* why attestation refused */
    ngx_http_dstack_auth_attest_t  *attest;
    ngx_uint_t                      attest_source;
    u_char                         *id;        /* DSTACK_APP_ID_LEN */
} ngx_http_dstack_auth_ctx_t;


/* what an attestation variable's getter is given */
typedef struct {
    ngx_http_dstack_auth_loc_conf_t  *alcf;
    ngx_http_dstack_auth_ctx_t       *ctx;
    dstack_attest_summary_t          *sum;
    dstack_verdict_e                  verdict;
    unsigned                          check;    /* the first one failed */
} ngx_http_dstack_auth_judged_t;


typedef struct ngx_http_dstack_auth_attest_var_s
    ngx_http_dstack_auth_attest_var_t;

/* NGX_DECLINED: not found */
typedef ngx_int_t (*ngx_http_dstack_auth_attest_get_pt)(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s);

/*
 * An attestation variable: its getter, the field of the summary it shows
 * (measurements), and its value where there is nothing to judge.
 */
struct ngx_http_dstack_auth_attest_var_s {
    ngx_http_dstack_auth_attest_get_pt   get;
    size_t                               offset;
    size_t                               len;      /* 0: at len_offset */
    size_t                               len_offset;
    char                                *off;      /* attestation off */
    char                                *no_cert;  /* nothing verified */
};


static ngx_int_t ngx_http_dstack_auth_strip_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_auth_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_dstack_auth_request_handler(ngx_http_request_t *r);
static ngx_http_dstack_auth_ctx_t *ngx_http_dstack_auth_identity(
    ngx_http_request_t *r);
static ngx_uint_t ngx_http_dstack_auth_same_ca(ngx_connection_t *c,
    ngx_http_ssl_srv_conf_t *sscf);
static ngx_http_dstack_auth_cert_id_t *ngx_http_dstack_auth_cert_id(
    ngx_http_request_t *r, ngx_http_ssl_srv_conf_t *sscf);
static void ngx_http_dstack_auth_parse_cert(ngx_http_dstack_auth_cert_id_t *ci,
    X509 *cert);
static void ngx_http_dstack_auth_from_cert(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx, ngx_http_dstack_auth_cert_id_t *ci);
static ngx_int_t ngx_http_dstack_auth_from_headers(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx, ngx_http_dstack_auth_loc_conf_t *alcf);
static ngx_int_t ngx_http_dstack_auth_deny(ngx_http_request_t *r,
    ngx_uint_t status, const char *msg);
static ngx_int_t ngx_http_dstack_auth_attestation(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx);
static void ngx_http_dstack_auth_attest_cleanup(void *data);
static ngx_int_t ngx_http_dstack_auth_attest_cert(ngx_http_request_t *r,
    X509 *leaf, ngx_http_dstack_auth_attest_t *a);
static ngx_int_t ngx_http_dstack_auth_attest_verdict(ngx_http_request_t *r,
    ngx_http_dstack_auth_loc_conf_t *alcf, ngx_http_dstack_auth_ctx_t *ctx);
static ngx_int_t ngx_http_dstack_auth_cache_lookup(
    ngx_http_dstack_auth_main_conf_t *amcf, u_char *key,
    dstack_attest_summary_t *sum);
static void ngx_http_dstack_auth_cache_insert(
    ngx_http_dstack_auth_main_conf_t *amcf, u_char *key,
    dstack_attest_summary_t *sum, ngx_log_t *log);
static ngx_http_dstack_auth_cache_node_t *ngx_http_dstack_auth_cache_find(
    ngx_http_dstack_auth_cache_t *cache, u_char *key);
static void ngx_http_dstack_auth_cache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_dstack_auth_verify_pem(ngx_http_request_t *r,
    ngx_http_dstack_auth_loc_conf_t *alcf, u_char *pem, size_t len,
    X509 **leaf);
static void ngx_http_dstack_auth_cert_id_cleanup(void *data);
static ngx_uint_t ngx_http_dstack_auth_header_class(ngx_table_elt_t *h);
static ngx_int_t ngx_http_dstack_auth_strip(ngx_http_request_t *r);
static ngx_table_elt_t *ngx_http_dstack_auth_find_header(
    ngx_http_request_t *r, const char *name, size_t len);
static ngx_uint_t ngx_http_dstack_auth_allowed(
    ngx_http_dstack_auth_loc_conf_t *alcf, u_char *id);
static ngx_int_t ngx_http_dstack_auth_set_header(ngx_http_request_t *r,
    ngx_str_t *app_id);
static ngx_int_t ngx_http_dstack_auth_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *msg);
static int ngx_http_dstack_auth_verify_callback(int ok, X509_STORE_CTX *sctx);
static ngx_int_t ngx_http_dstack_auth_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_dstack_auth_attest_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_dstack_auth_get_result(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s);
static ngx_int_t ngx_http_dstack_auth_get_error(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s);
static ngx_int_t ngx_http_dstack_auth_get_cache(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s);
static ngx_int_t ngx_http_dstack_auth_get_tcb_status(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s);
static ngx_int_t ngx_http_dstack_auth_get_measurement(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s);
static ngx_int_t ngx_http_dstack_auth_chain_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

static ngx_int_t ngx_http_dstack_auth_add_variables(ngx_conf_t *cf);
static void *ngx_http_dstack_auth_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_auth_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_dstack_auth_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_dstack_auth_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_dstack_auth_enable(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dstack_auth_attestation_mode(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_dstack_auth_allow(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_dstack_auth_request(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_dstack_auth_store_cleanup(void *data);
static char *ngx_http_dstack_auth_attestation_cache(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_dstack_auth_init_cache(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_dstack_auth_init(ngx_conf_t *cf);
static void ngx_http_dstack_auth_count(ngx_http_request_t *r,
    ngx_uint_t result);


static ngx_conf_enum_t  ngx_http_dstack_auth_attestation_modes[] = {
    { ngx_string("off"), DSTACK_POLICY_OFF },
    { ngx_string("bind"), DSTACK_POLICY_BIND },
    { ngx_string("full"), DSTACK_POLICY_FULL },
    { ngx_null_string, 0 }
};


static ngx_conf_bitmask_t  ngx_http_dstack_auth_tcb_levels[] = {
    { ngx_string("UpToDate"),
      DSTACK_TCB_ACCEPT(DSTACK_TCB_UP_TO_DATE) },
    { ngx_string("SWHardeningNeeded"),
      DSTACK_TCB_ACCEPT(DSTACK_TCB_SW_HARDENING_NEEDED) },
    { ngx_string("ConfigurationNeeded"),
      DSTACK_TCB_ACCEPT(DSTACK_TCB_CONFIGURATION_NEEDED) },
    { ngx_string("ConfigurationAndSWHardeningNeeded"),
      DSTACK_TCB_ACCEPT(DSTACK_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED) },
    { ngx_string("OutOfDate"),
      DSTACK_TCB_ACCEPT(DSTACK_TCB_OUT_OF_DATE) },
    { ngx_string("OutOfDateConfigurationNeeded"),
      DSTACK_TCB_ACCEPT(DSTACK_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED) },
    { ngx_string("Revoked"),
      DSTACK_TCB_ACCEPT(DSTACK_TCB_REVOKED) },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_dstack_auth_commands[] = {

    { ngx_string("dstack_auth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_dstack_auth_enable,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_auth_loc_conf_t, enable),
      NULL },

    { ngx_string("dstack_auth_allow"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_dstack_auth_allow,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_auth_request"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_dstack_auth_request,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("dstack_auth_request_root"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_auth_loc_conf_t, request_root),
      NULL },

    { ngx_string("dstack_auth_attestation"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_dstack_auth_attestation_mode,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_auth_loc_conf_t, attestation),
      &ngx_http_dstack_auth_attestation_modes },

    { ngx_string("dstack_auth_tcb_accept"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_conf_set_bitmask_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_dstack_auth_loc_conf_t, tcb_accept),
      &ngx_http_dstack_auth_tcb_levels },

    { ngx_string("dstack_auth_attestation_root"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_auth_main_conf_t, root_file),
      NULL },

    { ngx_string("dstack_auth_attestation_collateral"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_auth_main_conf_t, collateral_file),
      NULL },

    /* for tests: the fixture collateral expired in 2025 */
    { ngx_string("dstack_auth_attestation_time"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_dstack_auth_main_conf_t, time),
      NULL },

    { ngx_string("dstack_auth_attestation_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_dstack_auth_attestation_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_dstack_auth_module_ctx = {
    ngx_http_dstack_auth_add_variables,    /* preconfiguration */
    ngx_http_dstack_auth_init,             /* postconfiguration */

    ngx_http_dstack_auth_create_main_conf, /* create main configuration */
    ngx_http_dstack_auth_init_main_conf,   /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_dstack_auth_create_loc_conf,  /* create location configuration */
    ngx_http_dstack_auth_merge_loc_conf    /* merge location configuration */
};


/* ngx_hash_key() of "x-dstack-app-id", computed once */
static ngx_uint_t  ngx_http_dstack_auth_header_hash;


ngx_module_t  ngx_http_dstack_auth_module = {
    NGX_MODULE_V1,
    &ngx_http_dstack_auth_module_ctx,      /* module context */
    ngx_http_dstack_auth_commands,         /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


#define ngx_http_dstack_auth_summary_field(field, size)                       \
    offsetof(dstack_attest_summary_t, field), size, 0, NULL, NULL

static ngx_http_dstack_auth_attest_var_t  ngx_http_dstack_auth_attest_vars[] = {

    /* 0: $dstack_attestation */
    { ngx_http_dstack_auth_get_result, 0, 0, 0,
      "off", "failed:certificate" },

    /* 1: $dstack_attestation_error */
    { ngx_http_dstack_auth_get_error, 0, 0, 0,
      NULL, "no verified client certificate" },

    /* 2: $dstack_attestation_cache */
    { ngx_http_dstack_auth_get_cache, 0, 0, 0, NULL, NULL },

    /* 3: $dstack_tcb_status */
    { ngx_http_dstack_auth_get_tcb_status, 0, 0, 0, NULL, NULL },

    /* 4: $dstack_mrtd, 5-8: $dstack_rtmr0-3 */
    { ngx_http_dstack_auth_get_measurement,
      ngx_http_dstack_auth_summary_field(mrtd, 48) },
    { ngx_http_dstack_auth_get_measurement,
      ngx_http_dstack_auth_summary_field(rtmr[0], 48) },
    { ngx_http_dstack_auth_get_measurement,
      ngx_http_dstack_auth_summary_field(rtmr[1], 48) },
    { ngx_http_dstack_auth_get_measurement,
      ngx_http_dstack_auth_summary_field(rtmr[2], 48) },
    { ngx_http_dstack_auth_get_measurement,
      ngx_http_dstack_auth_summary_field(rtmr[3], 48) },

    /* 9: $dstack_compose_hash, 10: $dstack_instance_id */
    { ngx_http_dstack_auth_get_measurement,
      offsetof(dstack_attest_summary_t, compose_hash), 0,
      offsetof(dstack_attest_summary_t, compose_hash_len), NULL, NULL },
    { ngx_http_dstack_auth_get_measurement,
      offsetof(dstack_attest_summary_t, instance_id), 0,
      offsetof(dstack_attest_summary_t, instance_id_len), NULL, NULL }
};


static ngx_http_variable_t  ngx_http_dstack_auth_vars[] = {

    { ngx_string("dstack_app_id"), NULL, ngx_http_dstack_auth_variable,
      offsetof(ngx_http_dstack_auth_ctx_t, app_id), 0, 0 },

    { ngx_string("dstack_cert_usage"), NULL, ngx_http_dstack_auth_variable,
      offsetof(ngx_http_dstack_auth_ctx_t, usage), 0, 0 },

    { ngx_string("dstack_attestation"), NULL,
      ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[0], 0, 0 },

    { ngx_string("dstack_attestation_error"), NULL,
      ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[1], 0, 0 },

    { ngx_string("dstack_attestation_cache"), NULL,
      ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[2], 0, 0 },

    { ngx_string("dstack_mrtd"), NULL, ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[4], 0, 0 },

    { ngx_string("dstack_rtmr0"), NULL, ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[5], 0, 0 },

    { ngx_string("dstack_rtmr1"), NULL, ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[6], 0, 0 },

    { ngx_string("dstack_rtmr2"), NULL, ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[7], 0, 0 },

    { ngx_string("dstack_rtmr3"), NULL, ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[8], 0, 0 },

    { ngx_string("dstack_compose_hash"), NULL,
      ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[9], 0, 0 },

    { ngx_string("dstack_instance_id"), NULL,
      ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[10], 0, 0 },

    { ngx_string("dstack_tcb_status"), NULL,
      ngx_http_dstack_auth_attest_variable,
      (uintptr_t) &ngx_http_dstack_auth_attest_vars[3], 0, 0 },

    { ngx_string("dstack_client_cert_chain"), NULL,
      ngx_http_dstack_auth_chain_variable, 0, 0, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_dstack_auth_header = ngx_string("X-Dstack-App-Id");

/* SSL_CTX ex_data: an ngx_http_dstack_auth_verify_t, as nginx's indexes */
static int  ngx_http_dstack_auth_verify_index = -1;


/*
 * Before the access phase weighs anything: wherever dstack_auth is on, no
 * client-sent X-Dstack-App-Id (in any spelling a backend could take for
 * it) survives, whether the access phase later allows the request by
 * certificate, by address or not at all.
 */

static ngx_int_t
ngx_http_dstack_auth_strip_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_dstack_auth_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_auth_module);

    if (!alcf->enable) {
        return NGX_DECLINED;
    }

    rc = ngx_http_dstack_auth_strip(r);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_finalize_request(r,
            ngx_http_dstack_auth_send_error(r, NGX_HTTP_BAD_REQUEST,
                "a header name resembles X-Dstack-App-Id"));
        return NGX_DONE;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_dstack_auth_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_uint_t                        attestation;
    ngx_http_dstack_auth_ctx_t       *ctx;
    ngx_http_dstack_auth_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_auth_module);

    /* an auth_request endpoint applies the requirement itself */
    attestation = alcf->auth_request ? DSTACK_POLICY_OFF : alcf->attestation;

    if (!alcf->enable && attestation == DSTACK_POLICY_OFF) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_dstack_auth_identity(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (alcf->enable && ctx->error != NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth: %s", ctx->error);

        ngx_http_dstack_auth_count(r, NGX_DSTACK_METRICS_AUTH_NO_IDENTITY);
        return ngx_http_dstack_auth_deny(r, ctx->status, ctx->error);
    }

    if (alcf->enable && !ngx_http_dstack_auth_allowed(alcf, ctx->id)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack auth: app \"%V\" is not allowed", &ctx->app_id);

        ngx_http_dstack_auth_count(r, NGX_DSTACK_METRICS_AUTH_NOT_ALLOWED);
        return ngx_http_dstack_auth_deny(r, NGX_HTTP_FORBIDDEN,
                                         "app not allowed");
    }

    if (attestation != DSTACK_POLICY_OFF) {
        rc = ngx_http_dstack_auth_attest_verdict(r, alcf, ctx);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc != NGX_OK) {
            ngx_http_dstack_auth_count(r, NGX_DSTACK_METRICS_AUTH_ATTESTATION);
            return ngx_http_dstack_auth_deny(r, rc, ctx->deny);
        }
    }

    if (alcf->enable
        && ngx_http_dstack_auth_set_header(r, &ctx->app_id) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_dstack_auth_count(r, NGX_DSTACK_METRICS_AUTH_ACCEPTED);

    return NGX_OK;
}


/*
 * Under "satisfy any" a 401 or 403 is a status for the access phase to
 * weigh; otherwise (and for a misdirected request always) the request
 * ends here with a JSON body.
 */

static ngx_int_t
ngx_http_dstack_auth_deny(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->satisfy != NGX_HTTP_SATISFY_ALL
        && (status == NGX_HTTP_UNAUTHORIZED || status == NGX_HTTP_FORBIDDEN))
    {
        return status;
    }

    ngx_http_finalize_request(r,
                              ngx_http_dstack_auth_send_error(r, status, msg));
    return NGX_DONE;
}


/*
 * The seed's auth service, inside nginx: answers auth_request subrequests
 * with 200 and X-Dstack-App-Id, 401 without an identity, 403 when the
 * allowlist refuses it.
 */

static ngx_int_t
ngx_http_dstack_auth_request_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_table_elt_t                  *h;
    ngx_http_dstack_auth_ctx_t       *ctx;
    ngx_http_dstack_auth_loc_conf_t  *alcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_auth_module);

    if (r != r->main) {
        /*
         * a subrequest: only what nginx verified on this connection; the
         * certificate headers are the client's own here
         */
        ctx = ngx_http_dstack_auth_identity(r);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_auth_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_http_dstack_auth_from_headers(r, ctx, alcf) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->error != NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth request: %s", ctx->error);
        ngx_http_dstack_auth_count(r, NGX_DSTACK_METRICS_AUTH_NO_IDENTITY);
        return ngx_http_dstack_auth_send_error(r, ctx->status, ctx->error);
    }

    if (!ngx_http_dstack_auth_allowed(alcf, ctx->id)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack auth request: app \"%V\" is not allowed",
                      &ctx->app_id);
        ngx_http_dstack_auth_count(r, NGX_DSTACK_METRICS_AUTH_NOT_ALLOWED);
        return ngx_http_dstack_auth_send_error(r, NGX_HTTP_FORBIDDEN,
                                               "app not allowed");
    }

    if (alcf->attestation != DSTACK_POLICY_OFF) {
        rc = ngx_http_dstack_auth_attest_verdict(r, alcf, ctx);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc != NGX_OK) {
            ngx_http_dstack_auth_count(r, NGX_DSTACK_METRICS_AUTH_ATTESTATION);
            return ngx_http_dstack_auth_send_error(r, rc, ctx->deny);
        }
    }

    ngx_http_dstack_auth_count(r, NGX_DSTACK_METRICS_AUTH_ACCEPTED);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-Dstack-App-Id");
    h->value = ctx->app_id;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = 0;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


static ngx_http_dstack_auth_ctx_t *
ngx_http_dstack_auth_identity(ngx_http_request_t *r)
{
    ngx_http_ssl_srv_conf_t         *sscf;
    ngx_http_dstack_auth_ctx_t      *ctx;
    ngx_http_dstack_auth_cert_id_t  *ci;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_dstack_auth_module);
    if (ctx != NULL) {
        return ctx;
    }

    /* every field set here: no zeroing per request */

    ctx = ngx_palloc(r->main->pool, sizeof(ngx_http_dstack_auth_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_str_null(&ctx->app_id);
    ngx_str_null(&ctx->usage);
    ctx->error = NULL;
    ctx->status = NGX_HTTP_UNAUTHORIZED;
    ctx->deny = NULL;
    ctx->attest = NULL;
    ctx->attest_source = NGX_HTTP_DSTACK_AUTH_ATTEST_NONE;
    ctx->id = NULL;

    if (r->connection->ssl == NULL) {
        ctx->error = "no TLS client certificate (plain connection)";

    } else {
        sscf = ngx_http_get_module_srv_conf(r, ngx_http_ssl_module);

        ci = ngx_http_dstack_auth_cert_id(r, sscf);
        if (ci == NULL) {
            return NULL;
        }

        if (ci->error != NULL) {
            ctx->error = ci->error;
            ctx->status = ci->status;

        } else {
            ngx_http_dstack_auth_from_cert(r, ctx, ci);
        }
    }

    ngx_http_set_ctx(r->main, ctx, ngx_http_dstack_auth_module);

    return ctx;
}


/*
 * The connection's certificate identity for a server's ssl settings:
 * parsed once per connection (HTTP/2 streams share the real connection,
 * found through the SSL object), weighed again only for another server.
 */

static ngx_http_dstack_auth_cert_id_t *
ngx_http_dstack_auth_cert_id(ngx_http_request_t *r,
    ngx_http_ssl_srv_conf_t *sscf)
{
    X509                            *cert;
    ngx_connection_t                *c;
    ngx_pool_cleanup_t              *cln;
    ngx_http_dstack_auth_cert_id_t  *ci;

#if (NGX_HTTP_V2)
    c = (r->stream != NULL)
        ? ngx_ssl_get_connection(r->connection->ssl->connection)
        : r->connection;
#else
    c = r->connection;
#endif

    for (cln = c->pool->cleanup; cln != NULL; cln = cln->next) {
        if (cln->handler == ngx_http_dstack_auth_cert_id_cleanup) {
            ci = cln->data;

            if (ci->sscf == sscf) {
                return ci;
            }

            goto weigh;
        }
    }

    cln = ngx_pool_cleanup_add(c->pool, sizeof(ngx_http_dstack_auth_cert_id_t));
    if (cln == NULL) {
        return NULL;
    }

    ci = cln->data;
    ci->cert = NULL;

    /* only a complete result is found again */
    cln->handler = ngx_http_dstack_auth_cert_id_cleanup;

weigh:

    ci->sscf = sscf;
    ci->error = NULL;
    ci->status = NGX_HTTP_UNAUTHORIZED;

    if (!ngx_http_dstack_auth_same_ca(c, sscf)) {
        /*
         * no SNI (or SNI of another server) and a Host of this server:
         * the certificate was checked against another server's CA
         */
        ci->error = "client certificate was verified for another server";
        ci->status = NGX_HTTP_MISDIRECTED_REQUEST;
        return ci;
    }

    if (SSL_get_verify_result(c->ssl->connection) != X509_V_OK) {
        ci->error = "client certificate not verified";
        return ci;
    }

    cert = SSL_get0_peer_certificate(c->ssl->connection);

    if (cert == NULL) {
        ci->error = "no client certificate";
        return ci;
    }

    if (ci->cert != cert) {
        ngx_http_dstack_auth_parse_cert(ci, cert);
    }

    return ci;
}


/*
 * Whether the connection's verify result stands for the server that
 * handles the request: its SSL_CTX made it, or a server with the same
 * client CA settings did (two servers of one port that trust the same
 * files, as the shipped backend and VPC API servers do).  nginx keeps
 * each server's ssl configuration in its SSL_CTX.
 */

static ngx_uint_t
ngx_http_dstack_auth_same_ca(ngx_connection_t *c,
    ngx_http_ssl_srv_conf_t *sscf)
{
    SSL_CTX                  *ssl_ctx;
    ngx_http_ssl_srv_conf_t  *vscf;

    ssl_ctx = SSL_get_SSL_CTX(c->ssl->connection);

    if (ssl_ctx == sscf->ssl.ctx) {
        return 1;
    }

    vscf = SSL_CTX_get_ex_data(ssl_ctx, ngx_ssl_server_conf_index);

    if (vscf == NULL || sscf->ssl.ctx == NULL
        || vscf->verify == 0 || sscf->verify == 0
        || vscf->verify_depth != sscf->verify_depth)
    {
        return 0;
    }

#define ngx_http_dstack_auth_same_str(a, b)                                   \
    ((a).len == (b).len                                                       \
     && ((a).len == 0 || ngx_strncmp((a).data, (b).data, (a).len) == 0))

    return ngx_http_dstack_auth_same_str(vscf->client_certificate,
                                         sscf->client_certificate)
           && ngx_http_dstack_auth_same_str(vscf->trusted_certificate,
                                            sscf->trusted_certificate)
           && ngx_http_dstack_auth_same_str(vscf->crl, sscf->crl);

#undef ngx_http_dstack_auth_same_str
}


static void
ngx_http_dstack_auth_parse_cert(ngx_http_dstack_auth_cert_id_t *ci,
    X509 *cert)
{
    ci->rc = dstack_ratls_app_id(cert, ci->id);
    ci->has_usage = 0;

    if (ci->rc == DSTACK_RATLS_OK) {
        (void) dstack_hex_encode((char *) ci->hex, ci->id, DSTACK_APP_ID_LEN);

        if (dstack_ratls_usage(cert, (char *) ci->usage_buf)
            == DSTACK_RATLS_OK)
        {
            ci->has_usage = 1;
            ci->usage_len = ngx_strlen(ci->usage_buf);
        }
    }

    ci->cert = cert;
}


/* a request's identity points to what its certificate said */

static void
ngx_http_dstack_auth_from_cert(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx, ngx_http_dstack_auth_cert_id_t *ci)
{
    if (ci->rc != DSTACK_RATLS_OK) {
        ctx->error = (ci->rc == DSTACK_RATLS_MISSING)
                     ? "client certificate has no app_id"
                     : "client certificate has a malformed app_id";

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "dstack auth: app_id: %s",
                       dstack_ratls_strerror(ci->rc));
        return;
    }

    ctx->id = ci->id;
    ctx->app_id.data = ci->hex;
    ctx->app_id.len = DSTACK_APP_ID_HEX_LEN;

    if (ci->has_usage) {
        ctx->usage.data = ci->usage_buf;
        ctx->usage.len = ci->usage_len;
    }
}


/* marks the connection's certificate identity in its pool */

static void
ngx_http_dstack_auth_cert_id_cleanup(void *data)
{
}


/*
 * Seed mode: a separate auth endpoint gets the certificate from the front
 * server in X-Client-Cert and its verdict in X-Client-Verify
 * ($ssl_client_verify).  Those headers are read only from a local peer,
 * the way the seed's service listened on loopback, and the certificate
 * is believed only when its chain (the leaf, then the CAs that
 * $dstack_client_cert_chain adds) verifies to dstack_auth_request_root:
 * a local process can still replay a certificate it has seen (they are
 * public), but can no longer make one up.
 */

static ngx_int_t
ngx_http_dstack_auth_from_headers(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx, ngx_http_dstack_auth_loc_conf_t *alcf)
{
    X509                            *cert;
    u_char                          *pem, *dst, *src;
    ngx_int_t                        rc;
    ngx_table_elt_t                 *verify, *escaped;
    struct sockaddr                 *sa;
    ngx_http_dstack_auth_attest_t   *a;
    ngx_http_dstack_auth_cert_id_t  *ci;

    /* until a certificate is found */
    ctx->attest_source = NGX_HTTP_DSTACK_AUTH_ATTEST_NO_CERT;
    ctx->status = NGX_HTTP_UNAUTHORIZED;

    sa = r->connection->sockaddr;

    if (!(sa->sa_family == AF_UNIX
          || (sa->sa_family == AF_INET
              && (ntohl(((struct sockaddr_in *) sa)->sin_addr.s_addr) >> 24)
                 == 127)
#if (NGX_HAVE_INET6)
          || (sa->sa_family == AF_INET6
              && IN6_IS_ADDR_LOOPBACK(
                     &((struct sockaddr_in6 *) sa)->sin6_addr))
#endif
         ))
    {
        ctx->error = "certificate headers accepted from local peers only";
        return NGX_OK;
    }

    verify = ngx_http_dstack_auth_find_header(r, "x-client-verify",
                                              sizeof("x-client-verify") - 1);
    escaped = ngx_http_dstack_auth_find_header(r, "x-client-cert",
                                               sizeof("x-client-cert") - 1);

    if (verify == NULL || escaped == NULL || escaped->value.len == 0) {
        ctx->error = "no client certificate";
        return NGX_OK;
    }

    if (verify->value.len != sizeof("SUCCESS") - 1
        || ngx_strncmp(verify->value.data, "SUCCESS", verify->value.len) != 0)
    {
        ctx->error = "client certificate not verified";
        return NGX_OK;
    }

    pem = ngx_pnalloc(r->pool, escaped->value.len + 1);
    if (pem == NULL) {
        return NGX_ERROR;
    }

    src = escaped->value.data;
    dst = pem;
    ngx_unescape_uri(&dst, &src, escaped->value.len, 0);

    if (alcf->request_store == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack auth request: certificate header refused: "
                      "no \"dstack_auth_request_root\" to verify it");
        ctx->error = "no root to verify the client certificate against";
        return NGX_OK;
    }

    rc = ngx_http_dstack_auth_verify_pem(r, alcf, pem, dst - pem, &cert);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ctx->error = "client certificate header does not verify to the root";
        return NGX_OK;
    }

    /* parsed each time, into the request's pool */

    ci = ngx_palloc(r->pool, sizeof(ngx_http_dstack_auth_cert_id_t));

    if (ci == NULL) {
        rc = NGX_ERROR;

    } else {
        ngx_http_dstack_auth_parse_cert(ci, cert);
        ngx_http_dstack_auth_from_cert(r, ctx, ci);
    }

    if (rc == NGX_OK && alcf->attestation != DSTACK_POLICY_OFF) {
        /* no connection to remember it: the zone, if any, does */
        a = ngx_palloc(r->pool, sizeof(ngx_http_dstack_auth_attest_t));

        if (a == NULL
            || ngx_http_dstack_auth_attest_cert(r, cert, a) != NGX_OK)
        {
            rc = NGX_ERROR;

        } else {
            ctx->attest = a;
            ctx->attest_source = a->source;
        }
    }

    X509_free(cert);

    return rc;
}


/*
 * Verifies a PEM leaf, followed by its CAs, to the configured root, as
 * nginx would have verified a client certificate (purpose: TLS client),
 * and with the App CA check of the verify callback.  NGX_DECLINED: not a
 * certificate, or no chain to the root.
 */

static ngx_int_t
ngx_http_dstack_auth_verify_pem(ngx_http_request_t *r,
    ngx_http_dstack_auth_loc_conf_t *alcf, u_char *pem, size_t len,
    X509 **leaf)
{
    BIO             *bio;
    X509            *cert, *x;
    ngx_int_t        rc;
    ngx_uint_t       n;
    X509_STORE_CTX  *sctx;
    STACK_OF(X509)  *cas, *chain;

    *leaf = NULL;
    cert = NULL;
    cas = NULL;
    sctx = NULL;
    rc = NGX_ERROR;

    bio = BIO_new_mem_buf(pem, (int) len);
    if (bio == NULL) {
        goto failed;
    }

    cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);

    if (cert == NULL) {
        rc = NGX_DECLINED;
        goto failed;
    }

    cas = sk_X509_new_null();
    if (cas == NULL) {
        goto failed;
    }

    for (n = 0; /* void */; n++) {
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL) {
            break;
        }

        if (n == NGX_HTTP_DSTACK_AUTH_CHAIN_MAX || !sk_X509_push(cas, x)) {
            X509_free(x);
            rc = NGX_DECLINED;
            goto failed;
        }
    }

    /* the end of the PEM data leaves an error behind */
    ERR_clear_error();

    sctx = X509_STORE_CTX_new();

    if (sctx == NULL
        || !X509_STORE_CTX_init(sctx, alcf->request_store, cert, cas)
        || !X509_STORE_CTX_set_purpose(sctx, X509_PURPOSE_SSL_CLIENT))
    {
        goto failed;
    }

    if (X509_verify_cert(sctx) != 1) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth request: certificate header: %s",
                      X509_verify_cert_error_string(
                          X509_STORE_CTX_get_error(sctx)));
        rc = NGX_DECLINED;
        goto failed;
    }

    chain = X509_STORE_CTX_get0_chain(sctx);

    if (chain != NULL && sk_X509_num(chain) >= 2
        && dstack_ratls_check_issuer(cert, sk_X509_value(chain, 1))
           != DSTACK_RATLS_OK)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth request: certificate header: "
                      "its App CA vouches for another app");
        rc = NGX_DECLINED;
        goto failed;
    }

    X509_STORE_CTX_free(sctx);
    sk_X509_pop_free(cas, X509_free);
    BIO_free(bio);
    ERR_clear_error();

    *leaf = cert;

    return NGX_OK;

failed:

    if (sctx != NULL) {
        X509_STORE_CTX_free(sctx);
    }

    if (cas != NULL) {
        sk_X509_pop_free(cas, X509_free);
    }

    if (cert != NULL) {
        X509_free(cert);
    }

    if (bio != NULL) {
        BIO_free(bio);
    }

    ERR_clear_error();

    return rc;
}


/*
 * A name is X-Dstack-App-Id when it spells it with "_" for "-" in any
 * case (dstack_header.h): both $http_x_dstack_app_id and CGI-style
 * backends (HTTP_X_DSTACK_APP_ID) read x_dstack_app_id as the real one.
 */

static ngx_uint_t
ngx_http_dstack_auth_header_class(ngx_table_elt_t *h)
{
    u_char  folded[DSTACK_HEADER_FOLD_LEN];

    static u_char  name[] = "x-dstack-app-id";

    /* the one this module adds */

    if (h->key.data == ngx_http_dstack_auth_header.data) {
        return NGX_HTTP_DSTACK_AUTH_HEADER_IDENTITY;
    }

    switch (dstack_header_fold(h->key.data, h->key.len, folded)) {

    case DSTACK_HEADER_UNCLEAR:
        return NGX_HTTP_DSTACK_AUTH_HEADER_UNCLEAR;

    case DSTACK_HEADER_DSTACK:
        if (h->key.len == sizeof(name) - 1
            && ngx_memcmp(folded, name, sizeof(name) - 1) == 0)
        {
            return NGX_HTTP_DSTACK_AUTH_HEADER_IDENTITY;
        }

        /* fall through */

    default:
        return NGX_HTTP_DSTACK_AUTH_HEADER_KEEP;
    }
}


/*
 * Removes every X-Dstack-App-Id, whoever added it.  The list is rebuilt
 * rather than edited in place: headers_in keeps pointers to its
 * elements, which must stay valid.  Only when they all come last (as
 * the one this module added before an internal redirect does) are they
 * cut off the end, where no element moves.  NGX_DECLINED: a name that
 * cannot be classified.
 */

static ngx_int_t
ngx_http_dstack_auth_strip(ngx_http_request_t *r)
{
    uint64_t          ident;
    ngx_uint_t        i, k, n, found, first, class, nelts;
    ngx_list_part_t  *part, *next;
    ngx_table_elt_t  *h, *nh;

    found = 0;
    first = 0;
    n = 0;
    ident = 0;  /* the first 64 headers' classes, not asked twice */

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (!dstack_header_maybe(h[i].key.data, h[i].key.len)) {
                continue;
            }

            class = ngx_http_dstack_auth_header_class(&h[i]);

            if (class == NGX_HTTP_DSTACK_AUTH_HEADER_UNCLEAR) {
                ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                              "dstack auth: refused header name \"%V\"",
                              &h[i].key);
                return NGX_DECLINED;
            }

            if (class == NGX_HTTP_DSTACK_AUTH_HEADER_IDENTITY) {
                k = n + i;

                if (found++ == 0) {
                    first = k;
                }

                if (k < 64) {
                    ident |= (uint64_t) 1 << k;
                }
            }
        }

        n += part->nelts;
    }

    if (found == 0) {
        return NGX_OK;
    }

    /*
     * a subrequest's list is a copy of its parent's that shares the parts:
     * only the main request's own list is cut
     */

    part = r->headers_in.headers.last;

    if (r == r->main && first + found == n && found <= part->nelts) {
        part->nelts -= found;
        return NGX_OK;
    }

    /* the old list's first part, before the list is made anew */

    h = r->headers_in.headers.part.elts;
    nelts = r->headers_in.headers.part.nelts;
    next = r->headers_in.headers.part.next;

    if (ngx_list_init(&r->headers_in.headers, r->pool, n + 1,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    n = 0;

    for ( ;; ) {

        for (i = 0; i < nelts; i++, n++) {
            if ((n < 64) ? (ident & ((uint64_t) 1 << n)) != 0
                         : dstack_header_maybe(h[i].key.data, h[i].key.len)
                           && ngx_http_dstack_auth_header_class(&h[i])
                              == NGX_HTTP_DSTACK_AUTH_HEADER_IDENTITY)
            {
                ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                               "dstack auth: removed header \"%V\"",
                               &h[i].key);
                continue;
            }

            nh = ngx_list_push(&r->headers_in.headers);
            if (nh == NULL) {
                return NGX_ERROR;
            }

            *nh = h[i];
        }

        if (next == NULL) {
            return NGX_OK;
        }

        h = next->elts;
        nelts = next->nelts;
        next = next->next;
    }
}


static ngx_table_elt_t *
ngx_http_dstack_auth_find_header(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


static ngx_uint_t
ngx_http_dstack_auth_allowed(ngx_http_dstack_auth_loc_conf_t *alcf, u_char *id)
{
    u_char      *ids;
    ngx_uint_t   i;

    if (alcf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_ANY) {
        return 1;
    }

    if (alcf->allow_mode != NGX_HTTP_DSTACK_AUTH_ALLOW_LIST) {
        return 0;
    }

    ids = alcf->allow->elts;

    for (i = 0; i < alcf->allow->nelts; i++) {
        if (ngx_memcmp(ids + i * DSTACK_APP_ID_LEN, id, DSTACK_APP_ID_LEN)
            == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Adds the certificate's X-Dstack-App-Id.  Every other one went in this
 * location's preaccess phase, which runs before its access phase on
 * every (re)start of the location's phases: the client's copies, and one
 * an earlier location of an internal redirect added.
 */

static ngx_int_t
ngx_http_dstack_auth_set_header(ngx_http_request_t *r, ngx_str_t *app_id)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key = ngx_http_dstack_auth_header;
    h->value = *app_id;
    h->lowcase_key = (u_char *) "x-dstack-app-id";
    h->hash = ngx_http_dstack_auth_header_hash;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_auth_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg)
{
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (r == r->main) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    len = sizeof("{\"error\":\"\"}" CRLF) - 1 + ngx_strlen(msg);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* messages are fixed strings of this file, nothing to escape */
    b->last = ngx_sprintf(b->last, "{\"error\":\"%s\"}" CRLF, msg);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * The connection's attestation: verified once per connection (the result
 * hangs off the connection's pool, found again by its cleanup handler),
 * and once per certificate while the cache zone holds it.  HTTP/2 streams
 * share the real connection, found through the SSL object.
 */

static ngx_int_t
ngx_http_dstack_auth_attestation(ngx_http_request_t *r,
    ngx_http_dstack_auth_ctx_t *ctx)
{
    X509                           *leaf;
    ngx_connection_t               *c;
    ngx_pool_cleanup_t             *cln;
    ngx_http_dstack_auth_attest_t  *a;

    if (ctx->attest_source != NGX_HTTP_DSTACK_AUTH_ATTEST_NONE) {
        return NGX_OK;
    }

    c = r->connection;
    leaf = NULL;

    if (c->ssl != NULL
        && SSL_get_verify_result(c->ssl->connection) == X509_V_OK)
    {
        leaf = SSL_get0_peer_certificate(c->ssl->connection);
    }

    if (leaf == NULL) {
        ctx->attest_source = NGX_HTTP_DSTACK_AUTH_ATTEST_NO_CERT;
        return NGX_OK;
    }

    c = ngx_ssl_get_connection(c->ssl->connection);

    for (cln = c->pool->cleanup; cln != NULL; cln = cln->next) {
        if (cln->handler == ngx_http_dstack_auth_attest_cleanup) {
            ctx->attest = cln->data;
            ctx->attest_source = NGX_HTTP_DSTACK_AUTH_ATTEST_CONNECTION;
            return NGX_OK;
        }
    }

    cln = ngx_pool_cleanup_add(c->pool, sizeof(ngx_http_dstack_auth_attest_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    a = cln->data;

    if (ngx_http_dstack_auth_attest_cert(r, leaf, a) != NGX_OK) {
        return NGX_ERROR;
    }

    /* only a complete result is found again */
    cln->handler = ngx_http_dstack_auth_attest_cleanup;

    ctx->attest = a;
    ctx->attest_source = a->source;

    return NGX_OK;
}


/* marks the connection's attestation in its pool; nothing to release */

static void
ngx_http_dstack_auth_attest_cleanup(void *data)
{
}


static ngx_int_t
ngx_http_dstack_auth_attest_cert(ngx_http_request_t *r, X509 *leaf,
    ngx_http_dstack_auth_attest_t *a)
{
    unsigned                           n;
    ngx_uint_t                         us;
    struct timeval                     t0, t1;
    ngx_dstack_metrics_t              *m;
    dstack_attest_summary_t           *sum;
    ngx_http_dstack_auth_main_conf_t  *amcf;
    u_char                             key[NGX_HTTP_DSTACK_AUTH_KEY_LEN];

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_auth_module);
    sum = &a->summary;

    if (X509_digest(leaf, EVP_sha256(), key, &n) != 1 || n != 32) {
        ngx_ssl_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "X509_digest() failed");
        return NGX_ERROR;
    }

    ngx_memcpy(key + 32, amcf->verifier, NGX_HTTP_DSTACK_AUTH_KEY_LEN - 32);

    if (amcf->cache != NULL
        && ngx_http_dstack_auth_cache_lookup(amcf, key, sum) == NGX_OK)
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "dstack auth: attestation of %*xs cached",
                       (size_t) 8, key);

        a->source = NGX_HTTP_DSTACK_AUTH_ATTEST_HIT;

        m = ngx_dstack_metrics(amcf->metrics);

        if (m != NULL) {
            ngx_dstack_metrics_inc(&m->auth_cache_hits);
        }

        return NGX_OK;
    }

    ngx_gettimeofday(&t0);

    if (dstack_attest_summarize(leaf, &amcf->opts, sum) != 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "dstack auth: out of memory verifying an attestation");
        return NGX_ERROR;
    }

    ngx_gettimeofday(&t1);

    us = (t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_usec - t0.tv_usec);

    m = ngx_dstack_metrics(amcf->metrics);

    if (m != NULL) {
        ngx_dstack_metrics_inc(&m->auth_cache_misses);
        ngx_dstack_metrics_observe(&m->auth_verify, us);
    }

    if (sum->failed == DSTACK_CHECK_N) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth: verified the attestation of certificate "
                      "%*xs in %ui us: every check passed", (size_t) 8, key,
                      us);

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth: verified the attestation of certificate "
                      "%*xs in %ui us: check \"%s\" failed: %s", (size_t) 8,
                      key, us, dstack_attest_check_label(sum->failed),
                      sum->reason);
    }

    a->source = NGX_HTTP_DSTACK_AUTH_ATTEST_MISS;

    if (amcf->cache != NULL) {
        ngx_http_dstack_auth_cache_insert(amcf, key, sum, r->connection->log);
    }

    return NGX_OK;
}


/*
 * The location's requirement applied to the connection's attestation:
 * NGX_OK, 401 with the failed check, 403 for a refused TCB level, or
 * NGX_ERROR.
 */

static ngx_int_t
ngx_http_dstack_auth_attest_verdict(ngx_http_request_t *r,
    ngx_http_dstack_auth_loc_conf_t *alcf, ngx_http_dstack_auth_ctx_t *ctx)
{
    u_char                   *p;
    size_t                    len;
    unsigned                  check;
    const char               *label, *tcb;
    dstack_verdict_e          v;
    dstack_attest_summary_t  *sum;

    if (ngx_http_dstack_auth_attestation(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->attest == NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "dstack auth: attestation failed: no verified client "
                      "certificate");

        ctx->deny = "attestation failed: certificate";
        return NGX_HTTP_UNAUTHORIZED;
    }

    sum = &ctx->attest->summary;

    v = dstack_attest_judge(sum, alcf->attestation, alcf->tcb_accept, &check);

    if (v == DSTACK_VERDICT_OK) {
        return NGX_OK;
    }

    label = dstack_attest_check_label(check);
    len = sizeof("attestation failed: tcb ( not accepted)") + 48;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->deny = (char *) p;

    if (v == DSTACK_VERDICT_TCB) {
        tcb = dstack_tcb_status_name(sum->tcb);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack auth: attestation TCB status \"%s\" is not "
                      "accepted", tcb);

        ngx_snprintf(p, len, "attestation failed: tcb (%s not accepted)%Z",
                     tcb);
        return NGX_HTTP_FORBIDDEN;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "dstack auth: attestation failed: %s: %s", label,
                  sum->reason);

    ngx_snprintf(p, len, "attestation failed: %s%Z", label);

    return NGX_HTTP_UNAUTHORIZED;
}


static ngx_int_t
ngx_http_dstack_auth_cache_lookup(ngx_http_dstack_auth_main_conf_t *amcf,
    u_char *key, dstack_attest_summary_t *sum)
{
    ngx_int_t                           rc;
    ngx_http_dstack_auth_cache_t       *cache;
    ngx_http_dstack_auth_cache_node_t  *cn;

    cache = amcf->cache->data;
    rc = NGX_DECLINED;

    ngx_shmtx_lock(&cache->shpool->mutex);

    cn = ngx_http_dstack_auth_cache_find(cache, key);

    if (cn != NULL && cn->expire > ngx_time()) {
        ngx_memcpy(sum, &cn->summary, sizeof(dstack_attest_summary_t));

        ngx_queue_remove(&cn->queue);
        ngx_queue_insert_head(&cache->sh->queue, &cn->queue);

        rc = NGX_OK;
    }

    ngx_shmtx_unlock(&cache->shpool->mutex);

    return rc;
}


/*
 * Stores a verification; expired entries go first, then, while the zone
 * is full, the least recently used ones.
 */

static void
ngx_http_dstack_auth_cache_insert(ngx_http_dstack_auth_main_conf_t *amcf,
    u_char *key, dstack_attest_summary_t *sum, ngx_log_t *log)
{
    time_t                              now;
    ngx_uint_t                          i;
    ngx_queue_t                        *q;
    ngx_http_dstack_auth_cache_t       *cache;
    ngx_http_dstack_auth_cache_node_t  *cn;

    cache = amcf->cache->data;
    now = ngx_time();

    ngx_shmtx_lock(&cache->shpool->mutex);

    cn = ngx_http_dstack_auth_cache_find(cache, key);

    if (cn != NULL) {
        /* another worker verified it meanwhile */
        ngx_queue_remove(&cn->queue);
        goto found;
    }

    for (i = 0; i < 2 && !ngx_queue_empty(&cache->sh->queue); i++) {
        q = ngx_queue_last(&cache->sh->queue);
        cn = ngx_queue_data(q, ngx_http_dstack_auth_cache_node_t, queue);

        if (cn->expire > now) {
            break;
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&cache->sh->rbtree, &cn->node);
        ngx_slab_free_locked(cache->shpool, cn);
    }

    for ( ;; ) {
        cn = ngx_slab_alloc_locked(cache->shpool,
                                   sizeof(ngx_http_dstack_auth_cache_node_t));
        if (cn != NULL) {
            break;
        }

        if (ngx_queue_empty(&cache->sh->queue)) {
            ngx_shmtx_unlock(&cache->shpool->mutex);

            ngx_log_error(NGX_LOG_ALERT, log, 0,
                          "dstack auth: attestation cache \"%V\" cannot hold "
                          "one entry", &amcf->cache->shm.name);
            return;
        }

        q = ngx_queue_last(&cache->sh->queue);
        cn = ngx_queue_data(q, ngx_http_dstack_auth_cache_node_t, queue);

        ngx_queue_remove(q);
        ngx_rbtree_delete(&cache->sh->rbtree, &cn->node);
        ngx_slab_free_locked(cache->shpool, cn);
    }

    ngx_memcpy(cn->key, key, NGX_HTTP_DSTACK_AUTH_KEY_LEN);
    ngx_memcpy(&cn->node.key, key, sizeof(ngx_rbtree_key_t));

    ngx_rbtree_insert(&cache->sh->rbtree, &cn->node);

found:

    cn->expire = now + amcf->cache_valid;
    ngx_memcpy(&cn->summary, sum, sizeof(dstack_attest_summary_t));

    ngx_queue_insert_head(&cache->sh->queue, &cn->queue);

    ngx_shmtx_unlock(&cache->shpool->mutex);
}


static ngx_http_dstack_auth_cache_node_t *
ngx_http_dstack_auth_cache_find(ngx_http_dstack_auth_cache_t *cache,
    u_char *key)
{
    ngx_int_t                           rc;
    ngx_rbtree_key_t                    hash;
    ngx_rbtree_node_t                  *node, *sentinel;
    ngx_http_dstack_auth_cache_node_t  *cn;

    ngx_memcpy(&hash, key, sizeof(ngx_rbtree_key_t));

    node = cache->sh->rbtree.root;
    sentinel = cache->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        cn = (ngx_http_dstack_auth_cache_node_t *) node;

        rc = ngx_memcmp(key, cn->key, NGX_HTTP_DSTACK_AUTH_KEY_LEN);

        if (rc == 0) {
            return cn;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_dstack_auth_cache_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t                  **p;
    ngx_http_dstack_auth_cache_node_t   *cn, *cnt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            cn = (ngx_http_dstack_auth_cache_node_t *) node;
            cnt = (ngx_http_dstack_auth_cache_node_t *) temp;

            p = (ngx_memcmp(cn->key, cnt->key, NGX_HTTP_DSTACK_AUTH_KEY_LEN)
                 < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/*
 * Runs inside the handshake after OpenSSL's checks and nginx's callback:
 * an App CA that names an app may only vouch for that app.  The failure
 * is recorded in the verify result, so it also holds for resumed
 * sessions.
 */

static int
ngx_http_dstack_auth_verify_callback(int ok, X509_STORE_CTX *sctx)
{
    SSL                            *ssl;
    X509                           *leaf, *issuer;
    STACK_OF(X509)                 *chain;
    dstack_ratls_rc_e               rc;
    ngx_http_dstack_auth_verify_t  *v;

    /* nginx's own callback first: its "verify:" debug lines stay */

    ssl = X509_STORE_CTX_get_ex_data(sctx,
                                     SSL_get_ex_data_X509_STORE_CTX_idx());

    if (ssl != NULL && ngx_http_dstack_auth_verify_index != -1) {
        v = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl),
                                ngx_http_dstack_auth_verify_index);

        if (v != NULL && v->callback != NULL && !v->callback(ok, sctx)) {
            return 0;
        }
    }

    if (!ok || X509_STORE_CTX_get_error_depth(sctx) != 0) {
        return 1;
    }

    chain = X509_STORE_CTX_get0_chain(sctx);

    if (chain == NULL || sk_X509_num(chain) < 2) {
        return 1;
    }

    leaf = sk_X509_value(chain, 0);
    issuer = sk_X509_value(chain, 1);

    rc = dstack_ratls_check_issuer(leaf, issuer);

    if (rc != DSTACK_RATLS_OK) {
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
    }

    return 1;
}


static ngx_int_t
ngx_http_dstack_auth_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                   *s;
    ngx_http_dstack_auth_ctx_t  *ctx;

    ctx = ngx_http_dstack_auth_identity(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    s = (ngx_str_t *) ((char *) ctx + data);

    if (ctx->error != NULL || s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->data = s->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static void
ngx_http_dstack_auth_count(ngx_http_request_t *r, ngx_uint_t result)
{
    ngx_dstack_metrics_t              *m;
    ngx_http_dstack_auth_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_auth_module);
    m = ngx_dstack_metrics(amcf->metrics);

    if (m != NULL) {
        ngx_dstack_metrics_inc(&m->auth[result]);
    }
}


/*
 * $dstack_attestation and what it proved, for the current location's
 * requirement: the attestation judged once here, each variable's getter
 * (ngx_http_dstack_auth_attest_vars) reads its part.
 */

static ngx_int_t
ngx_http_dstack_auth_attest_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_dstack_auth_attest_var_t  *av = (void *) data;

    char                           *p;
    ngx_int_t                       rc;
    ngx_str_t                       s;
    ngx_http_dstack_auth_judged_t   j;

    j.alcf = ngx_http_get_module_loc_conf(r, ngx_http_dstack_auth_module);

    if (j.alcf->attestation == DSTACK_POLICY_OFF) {
        p = av->off;
        goto string;
    }

    j.ctx = ngx_http_dstack_auth_identity(r);

    if (j.ctx == NULL || ngx_http_dstack_auth_attestation(r, j.ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (j.ctx->attest == NULL) {
        p = av->no_cert;
        goto string;
    }

    j.sum = &j.ctx->attest->summary;
    j.verdict = dstack_attest_judge(j.sum, j.alcf->attestation,
                                    j.alcf->tcb_accept, &j.check);

    rc = av->get(r, &j, av, &s);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        v->not_found = 1;
        return NGX_OK;
    }

    goto value;

string:

    if (p == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s.data = (u_char *) p;
    s.len = ngx_strlen(p);

value:

    v->len = s.len;
    v->data = s.data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/* $dstack_attestation: ok, bind or failed:<check> */

static ngx_int_t
ngx_http_dstack_auth_get_result(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s)
{
    const char  *label;

    if (j->verdict == DSTACK_VERDICT_OK) {
        if (j->alcf->attestation == DSTACK_POLICY_FULL) {
            ngx_str_set(s, "ok");

        } else {
            ngx_str_set(s, "bind");
        }

        return NGX_OK;
    }

    label = dstack_attest_check_label(j->check);

    s->len = sizeof("failed:") - 1 + ngx_strlen(label);

    s->data = ngx_pnalloc(r->pool, s->len);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(s->data, "failed:%s", label);

    return NGX_OK;
}


/* $dstack_attestation_error: why it failed, or which TCB was refused */

static ngx_int_t
ngx_http_dstack_auth_get_error(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s)
{
    size_t  len;

    if (j->verdict == DSTACK_VERDICT_OK) {
        return NGX_DECLINED;
    }

    if (j->verdict == DSTACK_VERDICT_FAILED) {
        s->data = (u_char *) j->sum->reason;
        s->len = ngx_strlen(j->sum->reason);
        return NGX_OK;
    }

    len = sizeof("TCB status  is not accepted") - 1 + 48;

    s->data = ngx_pnalloc(r->pool, len);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    s->len = ngx_snprintf(s->data, len, "TCB status %s is not accepted",
                          dstack_tcb_status_name(j->sum->tcb))
             - s->data;

    return NGX_OK;
}


/* $dstack_attestation_cache: where the connection's result came from */

static ngx_int_t
ngx_http_dstack_auth_get_cache(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s)
{
    switch (j->ctx->attest_source) {

    case NGX_HTTP_DSTACK_AUTH_ATTEST_MISS:
        ngx_str_set(s, "miss");
        break;

    case NGX_HTTP_DSTACK_AUTH_ATTEST_HIT:
        ngx_str_set(s, "hit");
        break;

    default:
        ngx_str_set(s, "connection");
    }

    return NGX_OK;
}


/* $dstack_tcb_status: only where "full" checked it and it passed */

static ngx_int_t
ngx_http_dstack_auth_get_tcb_status(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s)
{
    const char  *name;

    if (j->alcf->attestation != DSTACK_POLICY_FULL
        || j->verdict == DSTACK_VERDICT_FAILED
        || j->sum->status[DSTACK_CHECK_TCB] != DSTACK_CHECK_PASS
        || j->sum->tcb >= DSTACK_TCB_N)
    {
        return NGX_DECLINED;
    }

    name = dstack_tcb_status_name(j->sum->tcb);

    if (name == NULL) {
        return NGX_DECLINED;
    }

    s->data = (u_char *) name;
    s->len = ngx_strlen(name);

    return NGX_OK;
}


/*
 * A measurement, in hex, from an attestation that meets the requirement;
 * a refused TCB level still exports it, the attestation being valid.
 */

static ngx_int_t
ngx_http_dstack_auth_get_measurement(ngx_http_request_t *r,
    ngx_http_dstack_auth_judged_t *j, ngx_http_dstack_auth_attest_var_t *av,
    ngx_str_t *s)
{
    u_char  *src;
    size_t   len;

    src = (u_char *) j->sum + av->offset;
    len = av->len ? av->len : *((u_char *) j->sum + av->len_offset);

    if (j->verdict == DSTACK_VERDICT_FAILED || len == 0) {
        return NGX_DECLINED;
    }

    s->data = ngx_pnalloc(r->pool, 2 * len);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    ngx_hex_dump(s->data, src, len);
    s->len = 2 * len;

    return NGX_OK;
}


/*
 * $dstack_client_cert_chain: the verified client chain without its root,
 * leaf first, as URL-escaped PEM: what a front server passes in
 * X-Client-Cert to a standalone dstack_auth_request endpoint, which
 * cannot verify a lone leaf ($ssl_client_escaped_cert) to the KMS root.
 */

static ngx_int_t
ngx_http_dstack_auth_chain_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    BIO             *bio;
    char            *pem;
    long             len;
    size_t           n;
    u_char          *p;
    ngx_uint_t       i, last;
    STACK_OF(X509)  *chain;

    v->not_found = 1;

    if (r->connection->ssl == NULL
        || SSL_get_verify_result(r->connection->ssl->connection) != X509_V_OK)
    {
        return NGX_OK;
    }

    chain = SSL_get0_verified_chain(r->connection->ssl->connection);

    if (chain == NULL || sk_X509_num(chain) == 0) {
        return NGX_OK;
    }

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        ERR_clear_error();
        return NGX_ERROR;
    }

    last = sk_X509_num(chain);
    last = (last > 1) ? last - 1 : last;

    for (i = 0; i < last; i++) {
        if (PEM_write_bio_X509(bio, sk_X509_value(chain, i)) != 1) {
            goto failed;
        }
    }

    len = BIO_get_mem_data(bio, &pem);
    if (len <= 0) {
        goto failed;
    }

    n = len + 2 * ngx_escape_uri(NULL, (u_char *) pem, len,
                                 NGX_ESCAPE_URI_COMPONENT);

    p = ngx_pnalloc(r->pool, n);
    if (p == NULL) {
        goto failed;
    }

    ngx_escape_uri(p, (u_char *) pem, len, NGX_ESCAPE_URI_COMPONENT);
    BIO_free(bio);

    v->len = n;
    v->data = p;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;

failed:

    BIO_free(bio);
    ERR_clear_error();

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_dstack_auth_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_dstack_auth_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static void *
ngx_http_dstack_auth_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_auth_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_auth_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     amcf->root_file = { 0, NULL };
     *     amcf->collateral_file = { 0, NULL };
     *     amcf->time = { 0, NULL };
     *     amcf->opts = { NULL, NULL, 0, ... };
     *     amcf->cache = NULL;
     */

    amcf->cache_valid = NGX_CONF_UNSET;

    return amcf;
}


/*
 * Loads the pinned Intel root and the collateral once, for every worker;
 * the verifier digest keeps a zone that survives a reload from answering
 * with results of other settings.
 */

static char *
ngx_http_dstack_auth_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_dstack_auth_main_conf_t *amcf = conf;

    int                  n;
    u_char              *der;
    time_t               now;
    const char          *err;
    EVP_MD_CTX          *md;
    ngx_pool_cleanup_t  *cln;
    u_char               collateral_hash[32];

    ngx_memzero(collateral_hash, sizeof(collateral_hash));

    if (amcf->time.len) {
        if (dstack_time_parse((char *) amcf->time.data, amcf->time.len,
                              &now)
            != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid \"dstack_auth_attestation_time\" "
                               "\"%V\" (RFC 3339 expected)", &amcf->time);
            return NGX_CONF_ERROR;
        }

        amcf->opts.now = now;
    }

    if (amcf->collateral_file.len && amcf->root_file.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_auth_attestation_collateral\" needs "
                           "\"dstack_auth_attestation_root\"");
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    cln->handler = dstack_attest_opts_cleanup;
    cln->data = &amcf->opts;

    if (amcf->root_file.len) {
        if (ngx_conf_full_name(cf->cycle, &amcf->root_file, 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        amcf->opts.root = dstack_attest_load_root(
                                         (char *) amcf->root_file.data, &err);

        if (amcf->opts.root == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"dstack_auth_attestation_root\" \"%V\": %s",
                               &amcf->root_file, err);
            return NGX_CONF_ERROR;
        }
    }

    if (amcf->collateral_file.len) {
        if (ngx_conf_full_name(cf->cycle, &amcf->collateral_file, 1)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        amcf->opts.collateral = dstack_attest_load_collateral(
                                   (char *) amcf->collateral_file.data,
                                   collateral_hash, &err);

        if (amcf->opts.collateral == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"dstack_auth_attestation_collateral\" "
                               "\"%V\": %s", &amcf->collateral_file, err);
            return NGX_CONF_ERROR;
        }
    }

    ngx_conf_init_value(amcf->cache_valid, NGX_HTTP_DSTACK_AUTH_CACHE_VALID);

    der = NULL;
    n = (amcf->opts.root != NULL) ? i2d_X509(amcf->opts.root, &der) : 0;
    now = amcf->opts.now;

    md = EVP_MD_CTX_new();

    if (md == NULL
        || n < 0
        || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1
        || EVP_DigestUpdate(md, der, n) != 1
        || EVP_DigestUpdate(md, collateral_hash, 32) != 1
        || EVP_DigestUpdate(md, &now, sizeof(time_t)) != 1
        || EVP_DigestFinal_ex(md, amcf->verifier, NULL) != 1)
    {
        ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                      "dstack auth: cannot hash the attestation settings");
        EVP_MD_CTX_free(md);
        OPENSSL_free(der);
        return NGX_CONF_ERROR;
    }

    EVP_MD_CTX_free(md);
    OPENSSL_free(der);

    return NGX_CONF_OK;
}


static void *
ngx_http_dstack_auth_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_dstack_auth_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_auth_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->allow_mode = NGX_HTTP_DSTACK_AUTH_ALLOW_UNSET;
     *     conf->allow = NULL;
     *     conf->request_root = { 0, NULL };
     *     conf->request_store = NULL;
     *     conf->tcb_accept = 0;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->auth_request = NGX_CONF_UNSET;
    conf->attestation = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_dstack_auth_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_dstack_auth_loc_conf_t  *prev = parent;
    ngx_http_dstack_auth_loc_conf_t  *conf = child;

    ngx_pool_cleanup_t                *cln;
    ngx_http_dstack_auth_main_conf_t  *amcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->auth_request, prev->auth_request, 0);
    ngx_conf_merge_uint_value(conf->attestation, prev->attestation,
                              DSTACK_POLICY_OFF);
    ngx_conf_merge_bitmask_value(conf->tcb_accept, prev->tcb_accept,
                                 DSTACK_TCB_ACCEPT_DEFAULT);

    amcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_dstack_auth_module);

    if (conf->attestation == DSTACK_POLICY_FULL
        && amcf->root_file.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"dstack_auth_attestation full\" needs "
                           "\"dstack_auth_attestation_root\"");
        return NGX_CONF_ERROR;
    }

    if (conf->request_root.data == NULL) {
        conf->request_root = prev->request_root;
        conf->request_store = prev->request_store;
    }

    if (conf->request_root.len && conf->request_store == NULL) {
        if (ngx_conf_full_name(cf->cycle, &conf->request_root, 1) != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        conf->request_store = X509_STORE_new();
        if (conf->request_store == NULL) {
            ERR_clear_error();
            return NGX_CONF_ERROR;
        }

        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            X509_STORE_free(conf->request_store);
            return NGX_CONF_ERROR;
        }

        cln->handler = ngx_http_dstack_auth_store_cleanup;
        cln->data = conf->request_store;

        if (X509_STORE_load_file(conf->request_store,
                                 (char *) conf->request_root.data)
            != 1)
        {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "cannot load \"%V\" of "
                          "\"dstack_auth_request_root\"",
                          &conf->request_root);
            return NGX_CONF_ERROR;
        }
    }

    if (conf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_UNSET) {
        conf->allow_mode = prev->allow_mode;
        conf->allow = prev->allow;
    }

    /* nothing configured anywhere: deny every app */
    if (conf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_UNSET) {
        conf->allow_mode = NGX_HTTP_DSTACK_AUTH_ALLOW_NONE;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_dstack_auth_enable(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char                              *rv;
    ngx_http_dstack_auth_loc_conf_t   *alcf = conf;
    ngx_http_dstack_auth_main_conf_t  *amcf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);

    if (rv == NGX_CONF_OK && alcf->enable) {
        amcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_dstack_auth_module);
        amcf->used = 1;
    }

    return rv;
}


static char *
ngx_http_dstack_auth_attestation_mode(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char                              *rv;
    ngx_http_dstack_auth_loc_conf_t   *alcf = conf;
    ngx_http_dstack_auth_main_conf_t  *amcf;

    rv = ngx_conf_set_enum_slot(cf, cmd, conf);

    if (rv == NGX_CONF_OK && alcf->attestation != DSTACK_POLICY_OFF) {
        amcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_dstack_auth_module);
        amcf->used = 1;
    }

    return rv;
}


static char *
ngx_http_dstack_auth_allow(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_auth_loc_conf_t *alcf = conf;

    u_char      *id;
    ngx_str_t   *value;
    ngx_uint_t   i;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 3
            && ngx_strncasecmp(value[i].data, (u_char *) "any", 3) == 0)
        {
            if (alcf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_LIST) {
                goto mixed;
            }

            alcf->allow_mode = NGX_HTTP_DSTACK_AUTH_ALLOW_ANY;
            continue;
        }

        if (alcf->allow_mode == NGX_HTTP_DSTACK_AUTH_ALLOW_ANY) {
            goto mixed;
        }

        if (alcf->allow == NULL) {
            alcf->allow = ngx_array_create(cf->pool, 4, DSTACK_APP_ID_LEN);
            if (alcf->allow == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        id = ngx_array_push(alcf->allow);
        if (id == NULL) {
            return NGX_CONF_ERROR;
        }

        if (dstack_hex_decode(id, DSTACK_APP_ID_LEN, (char *) value[i].data,
                              value[i].len)
            != DSTACK_APP_ID_LEN)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid app id \"%V\" in \"%V\": "
                               "40 hex characters expected",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        alcf->allow_mode = NGX_HTTP_DSTACK_AUTH_ALLOW_LIST;
    }

    return NGX_CONF_OK;

mixed:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" takes either \"any\" or app ids, not both",
                       &cmd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_dstack_auth_request(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_dstack_auth_loc_conf_t *alcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (alcf->auth_request != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    alcf->auth_request = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_dstack_auth_request_handler;

    return NGX_CONF_OK;
}


static void
ngx_http_dstack_auth_store_cleanup(void *data)
{
    X509_STORE_free(data);
}


/* dstack_auth_attestation_cache zone=name:size [valid=time] | off */

static char *
ngx_http_dstack_auth_attestation_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_dstack_auth_main_conf_t *amcf = conf;

    u_char          *p;
    time_t           valid;
    ssize_t          size;
    ngx_str_t       *value, name, s;
    ngx_uint_t       i;

    if (amcf->cache != NULL || amcf->cache_valid != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        amcf->cache_valid = 0;
        return NGX_CONF_OK;
    }

    size = 0;
    valid = NGX_HTTP_DSTACK_AUTH_CACHE_VALID;
    name.len = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {

            name.data = value[i].data + 5;

            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL || p == name.data) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            name.len = p - name.data;

            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone size \"%V\"", &value[i]);
                return NGX_CONF_ERROR;
            }

            if (size < (ssize_t) (8 * ngx_pagesize)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "zone \"%V\" is too small", &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "valid=", 6) == 0) {

            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            valid = ngx_parse_time(&s, 1);

            if (valid == (time_t) NGX_ERROR || valid == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid \"valid\" value \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have the \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    amcf->cache_valid = valid;

    amcf->cache = ngx_shared_memory_add(cf, &name, size,
                                        &ngx_http_dstack_auth_module);
    if (amcf->cache == NULL) {
        return NGX_CONF_ERROR;
    }

    if (amcf->cache->data != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    amcf->cache->data = ngx_pcalloc(cf->pool,
                                    sizeof(ngx_http_dstack_auth_cache_t));
    if (amcf->cache->data == NULL) {
        return NGX_CONF_ERROR;
    }

    amcf->cache->init = ngx_http_dstack_auth_init_cache;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_dstack_auth_init_cache(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_dstack_auth_cache_t  *ocache = data;

    size_t                         len;
    ngx_http_dstack_auth_cache_t  *cache;

    cache = shm_zone->data;

    if (ocache != NULL) {
        /* entries of other settings stay unreachable until they expire */
        cache->sh = ocache->sh;
        cache->shpool = ocache->shpool;
        return NGX_OK;
    }

    cache->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        cache->sh = cache->shpool->data;
        return NGX_OK;
    }

    cache->sh = ngx_slab_alloc(cache->shpool,
                               sizeof(ngx_http_dstack_auth_cache_sh_t));
    if (cache->sh == NULL) {
        return NGX_ERROR;
    }

    cache->shpool->data = cache->sh;

    ngx_rbtree_init(&cache->sh->rbtree, &cache->sh->sentinel,
                    ngx_http_dstack_auth_cache_insert_value);

    ngx_queue_init(&cache->sh->queue);

    len = sizeof(" in attestation cache zone \"\"") + shm_zone->shm.name.len;

    cache->shpool->log_ctx = ngx_slab_alloc(cache->shpool, len);
    if (cache->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(cache->shpool->log_ctx, " in attestation cache zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is expected: the least recently used entry goes */
    cache->shpool->log_nomem = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_dstack_auth_init(ngx_conf_t *cf)
{
    SSL_CTX                        *ctx;
    ngx_uint_t                      s;
    SSL_verify_cb                   cb;
    ngx_http_handler_pt            *h;
    ngx_http_dstack_auth_verify_t  *v;
    ngx_http_ssl_srv_conf_t    *sscf;
    ngx_http_core_srv_conf_t  **cscfp;
    ngx_http_core_main_conf_t  *cmcf;
    ngx_http_dstack_auth_main_conf_t  *amcf;

    dstack_header_init();
    ngx_http_dstack_auth_header_hash =
        ngx_hash_key((u_char *) "x-dstack-app-id",
                     sizeof("x-dstack-app-id") - 1);

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_dstack_auth_module);

    /*
     * the phase handlers decline at once where neither dstack_auth nor
     * attestation is on: a configuration that loads the module only for
     * its variables (a mesh node's log formats) does not run them at all
     */

    if (amcf->used) {
        h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_dstack_auth_handler;

        h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_dstack_auth_strip_handler;
    }

    amcf->metrics = ngx_dstack_metrics_zone(cf);

    if (ngx_http_dstack_auth_verify_index == -1) {
        ngx_http_dstack_auth_verify_index = SSL_CTX_get_ex_new_index(0, NULL,
                                                                     NULL,
                                                                     NULL,
                                                                     NULL);
        if (ngx_http_dstack_auth_verify_index == -1) {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_CTX_get_ex_new_index() failed");
            return NGX_ERROR;
        }
    }

    /* every server that verifies clients also checks App CA consistency */

    cscfp = cmcf->servers.elts;

    for (s = 0; s < cmcf->servers.nelts; s++) {
        sscf = cscfp[s]->ctx->srv_conf[ngx_http_ssl_module.ctx_index];
        ctx = sscf->ssl.ctx;

        if (ctx == NULL || sscf->verify == 0) {
            continue;
        }

        cb = SSL_CTX_get_verify_callback(ctx);

        if (cb == ngx_http_dstack_auth_verify_callback) {
            continue;
        }

        v = ngx_palloc(cf->pool, sizeof(ngx_http_dstack_auth_verify_t));
        if (v == NULL) {
            return NGX_ERROR;
        }

        v->callback = cb;

        if (SSL_CTX_set_ex_data(ctx, ngx_http_dstack_auth_verify_index, v)
            == 0)
        {
            ngx_ssl_error(NGX_LOG_EMERG, cf->log, 0,
                          "SSL_CTX_set_ex_data() failed");
            return NGX_ERROR;
        }

        SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx),
                           ngx_http_dstack_auth_verify_callback);
    }

    return NGX_OK;
}
