/*
 * The guest-agent endpoints of dstack-sim: /GetTlsKey, /Info, /GetQuote,
 * by POST with a JSON body or by GET with query arguments.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "sim.h"


#define SIM_QUOTE_LEN         636
#define SIM_QUOTE_RD_OFFSET   568
#define SIM_REPORT_DATA_LEN   64


typedef void (*sim_api_pt)(sim_ctx_t *ctx, json_t *args,
    sim_response_t *resp);


typedef struct {
    const char             *path;
    sim_api_pt              handler;
} sim_api_endpoint_t;


static void sim_api_get_tls_key(sim_ctx_t *ctx, json_t *args,
    sim_response_t *resp);
static void sim_api_info(sim_ctx_t *ctx, json_t *args,
    sim_response_t *resp);
static void sim_api_get_quote(sim_ctx_t *ctx, json_t *args,
    sim_response_t *resp);
static int sim_api_bool(json_t *args, const char *name, int *value);
static json_t *sim_api_query(char *query, const char **err);
static int sim_api_query_bool(const char *v, int *value);
static ssize_t sim_api_unescape(char *s);
static char *sim_api_pem_body(sim_pem_t *pem, size_t *len);
static char *sim_api_pem_string(char *p, const char *pem);
static void sim_api_json(sim_response_t *resp, int status, json_t *json);
static void sim_api_error(sim_response_t *resp, int status,
    const char *error);
static void sim_api_sha256_hex(const char *label, const char *data,
    char *hex);


static const sim_api_endpoint_t  sim_api_endpoints[] = {
    { "/GetTlsKey", sim_api_get_tls_key },
    { "/Info", sim_api_info },
    { "/GetQuote", sim_api_get_quote },
    { NULL, NULL }
};


void
sim_api_handler(sim_request_t *r, sim_response_t *resp, void *data)
{
    char                      *query, buf[128];
    json_t                    *args;
    const char                *err;
    json_error_t               jerr;
    const sim_api_endpoint_t  *ep;

    for (ep = sim_api_endpoints; ep->path != NULL; ep++) {
        if (strcmp(r->path, ep->path) == 0) {
            break;
        }
    }

    if (ep->path == NULL) {
        sim_api_error(resp, 404, "not found");
        return;
    }

    if (strcmp(r->method, "GET") == 0) {
        query = strdup(r->query != NULL ? r->query : "");
        if (query == NULL) {
            sim_api_error(resp, 500, "out of memory");
            return;
        }

        err = "out of memory";
        args = sim_api_query(query, &err);
        free(query);

        if (args == NULL) {
            sim_api_error(resp, 400, err);
            return;
        }

    } else if (strcmp(r->method, "POST") == 0) {
        if (r->body_len == 0) {
            args = json_object();

        } else {
            args = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES,
                              &jerr);
            if (args == NULL) {
                snprintf(buf, sizeof(buf),
                         "invalid JSON at line %d, column %d",
                         jerr.line, jerr.column);
                sim_api_error(resp, 400, buf);
                return;
            }
        }

        if (!json_is_object(args)) {
            json_decref(args);
            sim_api_error(resp, 400, "request body must be a JSON object");
            return;
        }

    } else {
        sim_api_error(resp, 405, "method not allowed");
        resp->allow = "GET, POST";
        return;
    }

    ep->handler((sim_ctx_t *) data, args, resp);

    json_decref(args);
}


static void
sim_api_get_tls_key(sim_ctx_t *ctx, json_t *args, sim_response_t *resp)
{
    int          ra_tls, server, client;
    char        *body;
    size_t       i, len;
    json_t      *v, *alt, *name;
    time_t       now;
    sim_pem_t    pem;
    sim_leaf_t   lf;
    const char  *s, *names[SIM_ALT_NAMES_MAX];

    memset(&lf, 0, sizeof(sim_leaf_t));
    lf.subject = "localhost";

    v = json_object_get(args, "subject");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v)) {
            sim_api_error(resp, 400, "subject must be a string");
            return;
        }

        s = json_string_value(v);
        len = json_string_length(v);

        if (len > SIM_SUBJECT_MAX) {
            sim_api_error(resp, 400, "subject longer than 255 bytes");
            return;
        }

        if (strlen(s) != len) {
            sim_api_error(resp, 400, "subject contains a NUL byte");
            return;
        }

        if (len != 0) {
            lf.subject = s;
        }
    }

    alt = json_object_get(args, "alt_names");

    if (alt != NULL && !json_is_null(alt)) {
        if (!json_is_array(alt)) {
            sim_api_error(resp, 400, "alt_names must be an array");
            return;
        }

        if (json_array_size(alt) > SIM_ALT_NAMES_MAX) {
            sim_api_error(resp, 400, "more than 32 alt_names");
            return;
        }

        json_array_foreach(alt, i, name) {
            if (!json_is_string(name)) {
                sim_api_error(resp, 400, "alt_names must be strings");
                return;
            }

            s = json_string_value(name);
            len = json_string_length(name);

            if (len == 0 || len > SIM_ALT_NAME_MAX) {
                sim_api_error(resp, 400,
                              "alt_names must be 1 to 253 bytes long");
                return;
            }

            /* DNS names and IP addresses: printable ASCII, no spaces */
            while (len-- != 0) {
                if ((u_char) s[len] <= 0x20 || (u_char) s[len] >= 0x7f) {
                    sim_api_error(resp, 400,
                                  "alt_names must be printable ASCII");
                    return;
                }
            }

            names[lf.nalt_names++] = s;
        }
    }

    lf.alt_names = names;

    if (sim_api_bool(args, "usage_ra_tls", &ra_tls) != 0
        || sim_api_bool(args, "usage_server_auth", &server) != 0
        || sim_api_bool(args, "usage_client_auth", &client) != 0)
    {
        sim_api_error(resp, 400, "usage flags must be booleans");
        return;
    }

    now = time(NULL);

    lf.not_before = now - 3600;
    lf.not_after = now + 365L * 24 * 3600;
    lf.server_auth = server;
    lf.client_auth = client;
    lf.app_id = ctx->kms ? ctx->app_id : NULL;
    lf.hook = ra_tls ? ctx->ra_tls_hook : NULL;
    lf.hook_data = ctx->ra_tls_data;

    if (sim_issue(ctx, &lf, &pem) != 0) {
        sim_api_error(resp, 500, "certificate issuance failed");
        return;
    }

    body = sim_api_pem_body(&pem, &len);
    sim_pem_free(&pem);

    if (body == NULL) {
        sim_api_error(resp, 500, "out of memory");
        return;
    }

    resp->status = 200;
    resp->body = body;
    resp->len = len;
}


static void
sim_api_info(sim_ctx_t *ctx, json_t *args, sim_response_t *resp)
{
    char           app_id[2 * SIM_ID_LEN + 1];
    char           instance_id[2 * SIM_ID_LEN + 1];
    char           compose_hash[2 * 32 + 1], device_id[2 * 32 + 1];
    char           os_image_hash[2 * 32 + 1], root_id[2 * 32 + 1];
    char           zero48[2 * 48 + 1], kpi[128], tcb[1024];
    u_char         md[32];
    json_t        *json;
    unsigned int   n;

    *dstack_hex_encode(app_id, ctx->app_id, SIM_ID_LEN) = '\0';
    *dstack_hex_encode(instance_id, ctx->instance_id, SIM_ID_LEN) = '\0';
    *dstack_hex_encode(compose_hash, ctx->compose_hash, 32) = '\0';
    sim_api_sha256_hex("device", instance_id, device_id);
    sim_api_sha256_hex("os-image", "", os_image_hash);

    if (ctx->kms
        && X509_pubkey_digest(ctx->root.cert, EVP_sha256(), md, &n) == 1)
    {
        *dstack_hex_encode(root_id, md, 32) = '\0';
        snprintf(kpi, sizeof(kpi), "{\"name\":\"kms\",\"id\":\"%s\"}",
                 root_id);

    } else {
        snprintf(kpi, sizeof(kpi), "{\"name\":\"none\",\"id\":\"\"}");
    }

    /* the simulated quote's measurements are all zero */

    memset(zero48, '0', 2 * 48);
    zero48[2 * 48] = '\0';

    snprintf(tcb, sizeof(tcb),
             "{\"mrtd\":\"%s\",\"rtmr0\":\"%s\",\"rtmr1\":\"%s\","
             "\"rtmr2\":\"%s\",\"rtmr3\":\"%s\",\"compose_hash\":\"%s\","
             "\"device_id\":\"%s\",\"event_log\":[]}",
             zero48, zero48, zero48, zero48, zero48, compose_hash,
             device_id);

    json = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b}",
                     "app_id", app_id,
                     "instance_id", instance_id,
                     "app_name", ctx->app_name,
                     "device_id", device_id,
                     "compose_hash", compose_hash,
                     "os_image_hash", os_image_hash,
                     "key_provider_info", kpi,
                     "tcb_info", tcb,
                     "profile", ctx->kms ? "kms" : "no-kms",
                     "simulated", 1);

    sim_api_json(resp, 200, json);
}


/*
 * Not a real quote: a TDX v4 header (version 4, ECDSA-256 key, TEE type
 * TDX), an all-zero TD report with report_data at 568, and an empty
 * signature data length.  "simulated":true says so.
 */

static void
sim_api_get_quote(sim_ctx_t *ctx, json_t *args, sim_response_t *resp)
{
    int          n;
    char         quote_hex[2 * SIM_QUOTE_LEN + 1];
    char         rd_hex[2 * SIM_REPORT_DATA_LEN + 1];
    u_char       quote[SIM_QUOTE_LEN];
    json_t      *v;
    size_t       len;
    const char  *s;

    memset(quote, 0, sizeof(quote));

    v = json_object_get(args, "report_data");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v)) {
            sim_api_error(resp, 400, "report_data must be a hex string");
            return;
        }

        s = json_string_value(v);
        len = json_string_length(v);

        if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
            s += 2;
            len -= 2;
        }

        n = dstack_hex_decode(quote + SIM_QUOTE_RD_OFFSET,
                              SIM_REPORT_DATA_LEN, s, len);
        if (n < 0) {
            sim_api_error(resp, 400,
                          "report_data must be hex of at most 64 bytes");
            return;
        }
    }

    quote[0] = 4;
    quote[2] = 2;
    quote[4] = 0x81;

    *dstack_hex_encode(quote_hex, quote, SIM_QUOTE_LEN) = '\0';
    *dstack_hex_encode(rd_hex, quote + SIM_QUOTE_RD_OFFSET,
                       SIM_REPORT_DATA_LEN) = '\0';

    sim_api_json(resp, 200,
                 json_pack("{s:s, s:s, s:s, s:b}",
                           "quote", quote_hex,
                           "event_log", "[]",
                           "report_data", rd_hex,
                           "simulated", 1));
}


/* absent or null is false; anything but a boolean is an error */

static int
sim_api_bool(json_t *args, const char *name, int *value)
{
    json_t  *v;

    v = json_object_get(args, name);
    *value = 0;

    if (v == NULL || json_is_null(v)) {
        return 0;
    }

    if (!json_is_boolean(v)) {
        return -1;
    }

    *value = json_is_true(v);

    return 0;
}


/*
 * The GET form: query arguments become the JSON object that the POST
 * form would carry; alt_names may repeat and may be comma-separated.
 */

static json_t *
sim_api_query(char *query, const char **err)
{
    int       b;
    char     *arg, *key, *val, *name, empty[1];
    json_t   *args, *alt, *v;
    ssize_t   klen, vlen;

    args = json_object();
    if (args == NULL) {
        return NULL;
    }

    alt = NULL;

    while ((arg = strsep(&query, "&")) != NULL) {
        if (*arg == '\0') {
            continue;
        }

        /* "key" alone is "key=", in a writable buffer for unescaping */
        key = strsep(&arg, "=");
        empty[0] = '\0';
        val = arg != NULL ? arg : empty;

        klen = sim_api_unescape(key);
        vlen = sim_api_unescape(val);

        if (klen < 0 || vlen < 0) {
            *err = "bad percent-encoding in the query";
            goto failed;
        }

        if ((size_t) klen != strlen(key) || (size_t) vlen != strlen(val)) {
            *err = "query arguments must not contain NUL bytes";
            goto failed;
        }

        if (strcmp(key, "subject") == 0 || strcmp(key, "report_data") == 0) {
            v = json_stringn(val, vlen);
            if (v == NULL || json_object_set_new(args, key, v) != 0) {
                *err = "query arguments must be UTF-8";
                goto failed;
            }

        } else if (strcmp(key, "alt_names") == 0
                   || strcmp(key, "alt_names[]") == 0)
        {
            if (alt == NULL) {
                alt = json_array();
                if (alt == NULL || json_object_set_new(args, "alt_names", alt)
                                   != 0)
                {
                    goto failed;
                }
            }

            while ((name = strsep(&val, ",")) != NULL) {
                if (*name == '\0') {
                    continue;
                }

                /* one more than allowed is enough for the handler to refuse */
                if (json_array_size(alt) > SIM_ALT_NAMES_MAX) {
                    break;
                }

                if (json_array_append_new(alt, json_string(name)) != 0) {
                    *err = "query arguments must be UTF-8";
                    goto failed;
                }
            }

        } else if (strncmp(key, "usage_", 6) == 0) {
            if (sim_api_query_bool(val, &b) != 0) {
                *err = "usage flags must be true or false";
                goto failed;
            }

            if (json_object_set_new(args, key, json_boolean(b)) != 0) {
                goto failed;
            }
        }
    }

    return args;

failed:

    json_decref(args);

    return NULL;
}


static int
sim_api_query_bool(const char *v, int *value)
{
    if (*v == '\0' || strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *value = 1;
        return 0;
    }

    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *value = 0;
        return 0;
    }

    return -1;
}


/* decodes %XX and '+' in place; the result may hold NUL bytes */

static ssize_t
sim_api_unescape(char *s)
{
    char    *d, *start;
    u_char   c;

    for (start = s, d = s; *s != '\0'; s++) {
        c = *s;

        if (c == '+') {
            c = ' ';

        } else if (c == '%') {
            if (dstack_hex_decode(&c, 1, s + 1, 2) != 1) {
                return -1;
            }

            s += 2;
        }

        *d++ = c;
    }

    *d = '\0';

    return d - start;
}


/*
 * The GetTlsKey answer is written by hand rather than by jansson, so that
 * the private key is copied once, into a buffer cleared after sending.
 * PEM text needs no JSON escaping but for its newlines.
 */

static char *
sim_api_pem_body(sim_pem_t *pem, size_t *len)
{
    char    *body, *p;
    size_t   i, n;

    n = sizeof("{\"key\":,\"certificate_chain\":[]}") + 2 * strlen(pem->key)
        + 2;

    for (i = 0; i < pem->nchain; i++) {
        n += 2 * strlen(pem->chain[i]) + 3;
    }

    body = malloc(n);
    if (body == NULL) {
        return NULL;
    }

    p = body;
    p = stpcpy(p, "{\"key\":");
    p = sim_api_pem_string(p, pem->key);
    p = stpcpy(p, ",\"certificate_chain\":[");

    for (i = 0; i < pem->nchain; i++) {
        if (i != 0) {
            *p++ = ',';
        }

        p = sim_api_pem_string(p, pem->chain[i]);
    }

    p = stpcpy(p, "]}");
    *len = p - body;

    return body;
}


static char *
sim_api_pem_string(char *p, const char *pem)
{
    *p++ = '"';

    for ( /* void */ ; *pem != '\0'; pem++) {
        if (*pem == '\n') {
            *p++ = '\\';
            *p++ = 'n';

        } else {
            *p++ = *pem;
        }
    }

    *p++ = '"';

    return p;
}


static void
sim_api_json(sim_response_t *resp, int status, json_t *json)
{
    resp->status = status;
    resp->body = json != NULL ? json_dumps(json, JSON_COMPACT) : NULL;
    resp->len = resp->body != NULL ? strlen(resp->body) : 0;

    json_decref(json);

    if (resp->body == NULL) {
        resp->status = 500;
        resp->body = strdup("{\"error\":\"out of memory\"}");
        resp->len = resp->body != NULL ? strlen(resp->body) : 0;
    }
}


static void
sim_api_error(sim_response_t *resp, int status, const char *error)
{
    sim_api_json(resp, status, json_pack("{s:s}", "error", error));
}


static void
sim_api_sha256_hex(const char *label, const char *data, char *hex)
{
    int     n;
    char    buf[256];
    u_char  md[32];

    n = snprintf(buf, sizeof(buf), "dstack-sim %s:%s", label, data);

    if (n < 0 || (size_t) n >= sizeof(buf)
        || EVP_Digest(buf, n, md, NULL, EVP_sha256(), NULL) != 1)
    {
        memset(md, 0, sizeof(md));
    }

    *dstack_hex_encode(hex, md, sizeof(md)) = '\0';
}
