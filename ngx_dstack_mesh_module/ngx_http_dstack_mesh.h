
/*
 * What ngx_http_dstack_mesh_module.c (handler, filters, configuration) and
 * ngx_http_dstack_mesh_balancer.c (the upstream balancer) share.
 */


#ifndef _NGX_HTTP_DSTACK_MESH_H_INCLUDED_
#define _NGX_HTTP_DSTACK_MESH_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "dstack_ratls.h"
#include "dstack_attest_policy.h"
#include "ngx_dstack_metrics.h"


#define NGX_HTTP_DSTACK_MESH_PREFIX      "x-dstack-target-"

/*
 * What a pooled connection or a TLS session was verified for: the app_id,
 * the instance_id (all zero without one), the port, whether an instance
 * was named at all, and whether it was the gateway's TLS (unattested).
 */
#define NGX_HTTP_DSTACK_MESH_KEY_LEN     (2 * DSTACK_APP_ID_LEN + 4)
#define NGX_HTTP_DSTACK_MESH_KEY_GATEWAY (2 * DSTACK_APP_ID_LEN + 3)

/* the gateway's public chain: leaf, intermediates, a web root */
#define NGX_HTTP_DSTACK_MESH_GATEWAY_DEPTH   4
#define NGX_HTTP_DSTACK_MESH_SYSTEM_CA   "/etc/ssl/certs/ca-certificates.crt"

#define NGX_HTTP_DSTACK_MESH_VPN_IP_LEN  64

#define NGX_HTTP_DSTACK_MESH_DETAIL_LEN  256

/* where the last attempt to reach the target stopped (0: it did not) */
#define NGX_HTTP_DSTACK_MESH_FAIL_CONNECT    1
#define NGX_HTTP_DSTACK_MESH_FAIL_CLOSED     2
#define NGX_HTTP_DSTACK_MESH_FAIL_HANDSHAKE  3
#define NGX_HTTP_DSTACK_MESH_FAIL_PEER       4
#define NGX_HTTP_DSTACK_MESH_FAIL_UPSTREAM   5

/* what the mesh does with a request header */
#define NGX_HTTP_DSTACK_MESH_KEEP            0
#define NGX_HTTP_DSTACK_MESH_STRIP           1
#define NGX_HTTP_DSTACK_MESH_APP             2
#define NGX_HTTP_DSTACK_MESH_INSTANCE        3
#define NGX_HTTP_DSTACK_MESH_PORT            4
#define NGX_HTTP_DSTACK_MESH_USE_TLS         5
#define NGX_HTTP_DSTACK_MESH_UNCLEAR         6

#define NGX_HTTP_DSTACK_MESH_TLS_FAILED      525
#define NGX_HTTP_DSTACK_MESH_PEER_REJECTED   526


extern ngx_module_t  ngx_http_proxy_module;


typedef struct {
    ngx_array_t                        agents;    /* of agent_ref_t */
    ngx_shm_zone_t                    *metrics;
} ngx_http_dstack_mesh_main_conf_t;


typedef struct {
    ngx_http_core_srv_conf_t          *cscf;
    ngx_str_t                         *name;
    u_char                            *file;
    ngx_uint_t                         line;
} ngx_http_dstack_mesh_agent_ref_t;


/* an upstream{} block with "dstack_mesh_gateway" */
typedef struct {
    ngx_str_t                          domain;
    ngx_str_t                          gateway;   /* "<domain>:<port>" */
    ngx_str_t                          port;
    ngx_addr_t                        *addrs;     /* NULL: resolve */
    ngx_uint_t                         naddrs;

    ngx_str_t                          certificate;
    ngx_str_t                          certificate_key;
    ngx_str_t                          trusted_certificate;
    ngx_uint_t                         verify_depth;

    ngx_str_t                          gateway_trusted_certificate;
    X509_STORE                        *gateway_store;

    ngx_uint_t                         attestation; /* dstack_policy_mode_e */
    ngx_uint_t                         tcb_accept;  /* 0: not configured */
    dstack_attest_opts_t               attest_opts;

    ngx_uint_t                         max_cached;
    ngx_uint_t                         requests;
    ngx_msec_t                         timeout;

    ngx_ssl_t                         *ssl;

    ngx_queue_t                        cache;
    ngx_queue_t                        free;
    ngx_queue_t                        sessions;
    ngx_queue_t                        free_sessions;
} ngx_http_dstack_mesh_srv_conf_t;


typedef struct {
    ngx_flag_t                         target;
    ngx_http_complex_value_t          *app;
    ngx_http_complex_value_t          *instance;
    ngx_http_complex_value_t          *port;
    ngx_str_t                          agent;
    ngx_uint_t                         json_errors;
    ngx_flag_t                         allow_unattested;
    ngx_flag_t                         attested_header;
    ngx_str_t                          vpn_ip_file;

    ngx_http_handler_pt                proxy_handler;
    ngx_http_dstack_mesh_srv_conf_t   *mesh;

    u_char                            *file;
    ngx_uint_t                         line;
} ngx_http_dstack_mesh_loc_conf_t;


typedef struct {
    ngx_http_dstack_mesh_srv_conf_t   *conf;
    ngx_queue_t                        queue;
    ngx_connection_t                  *connection;
    socklen_t                          socklen;
    ngx_sockaddr_t                     sockaddr;
    size_t                             name_len;
    u_char                             name[NGX_SOCKADDR_STRLEN];
    u_char                             key[NGX_HTTP_DSTACK_MESH_KEY_LEN];
} ngx_http_dstack_mesh_cache_t;


typedef struct {
    ngx_queue_t                        queue;
    ngx_ssl_session_t                 *session;
    u_char                             key[NGX_HTTP_DSTACK_MESH_KEY_LEN];
} ngx_http_dstack_mesh_session_t;


/* the request's target; also the balancer's per-request data */
typedef struct {
    ngx_http_dstack_mesh_srv_conf_t   *conf;
    ngx_http_request_t                *request;

    ngx_str_t                          app;       /* lowercase hex */
    ngx_str_t                          instance;
    ngx_str_t                          port;
    ngx_str_t                          host;      /* null-terminated */
    ngx_str_t                          attested;  /* "1", "0", none */

    ngx_addr_t                        *addrs;     /* of the gateway */
    ngx_uint_t                         naddrs;
    ngx_uint_t                         next;
    ngx_resolver_ctx_t                *resolver;

    ngx_uint_t                         failure;
    ngx_str_t                         *peer;      /* gateway address */
    ngx_str_t                          detail;
    ngx_str_t                          code;      /* the error's, or none */
    ngx_uint_t                         reject;    /* why a peer was refused */

    socklen_t                          socklen;   /* of a pooled connection */
    ngx_sockaddr_t                     sockaddr;
    ngx_str_t                          name;

    ngx_buf_t                         *error;     /* a JSON error body */
    unsigned                           replaced:1;
    unsigned                           unattested:1;
    unsigned                           ssl_data:1; /* set on a connection */

    u_char                             key[NGX_HTTP_DSTACK_MESH_KEY_LEN];
    u_char                             name_buf[NGX_SOCKADDR_STRLEN];
    u_char                            *detail_buf; /* _DETAIL_LEN, or NULL */
} ngx_http_dstack_mesh_ctx_t;


ngx_dstack_metrics_t *ngx_http_dstack_mesh_metrics(
    ngx_http_request_t *r);
u_char *ngx_http_dstack_mesh_detail_buf(ngx_http_dstack_mesh_ctx_t *ctx);
ngx_int_t ngx_http_dstack_mesh_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);


extern ngx_module_t  ngx_http_dstack_mesh_module;


#endif /* _NGX_HTTP_DSTACK_MESH_H_INCLUDED_ */
