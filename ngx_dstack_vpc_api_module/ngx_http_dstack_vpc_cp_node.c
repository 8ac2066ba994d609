
/*
 * The control plane's nodes (ngx_http_dstack_vpc_cp_module.c): the checks
 * every node record passes before it goes into any map, its JSON, and the
 * growing output buffers frames and responses are built in.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_dstack_vpc_cp.h"




/* --- nodes --------------------------------------------------------------- */

/*
 * Every node record is checked before it goes into any map, so that a
 * record written by anyone else (an old version, a hand edit) cannot
 * break other nodes' agents.
 */

ngx_int_t
ngx_http_dstack_vpc_cp_node_valid(ngx_http_dstack_vpc_cp_main_conf_t *cmcf,
    ngx_http_dstack_vpc_cp_node_t *node)
{
    u_char      *p, *last, *e;
    uint32_t     addr;
    ngx_str_t   *f;
    ngx_uint_t   n;

    f = node->f;

    if (ngx_http_dstack_vpc_cp_digits(&f[NGX_HTTP_DSTACK_VPC_CP_F_ID], 18)
        != NGX_OK
        || f[NGX_HTTP_DSTACK_VPC_CP_F_KEY].len != NGX_HTTP_DSTACK_VPC_CP_KEY_LEN
        || ngx_http_dstack_vpc_cp_hex(&f[NGX_HTTP_DSTACK_VPC_CP_F_KEY],
                                      NGX_HTTP_DSTACK_VPC_CP_KEY_LEN)
           != NGX_OK
        || ngx_http_dstack_vpc_cp_label(&f[NGX_HTTP_DSTACK_VPC_CP_F_NAME])
           != NGX_OK
        || ngx_dstack_vpc_parse_ipv4(f[NGX_HTTP_DSTACK_VPC_CP_F_IP].data,
                                     f[NGX_HTTP_DSTACK_VPC_CP_F_IP].len,
                                     &addr)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (f[NGX_HTTP_DSTACK_VPC_CP_F_ONLINE].len > 1
        || (f[NGX_HTTP_DSTACK_VPC_CP_F_LAST_SEEN].len
            && ngx_http_dstack_vpc_cp_digits(
                   &f[NGX_HTTP_DSTACK_VPC_CP_F_LAST_SEEN], 18) != NGX_OK)
        || (f[NGX_HTTP_DSTACK_VPC_CP_F_KEY_EXPIRY].len
            && ngx_http_dstack_vpc_cp_digits(
                   &f[NGX_HTTP_DSTACK_VPC_CP_F_KEY_EXPIRY], 18) != NGX_OK)
        || (f[NGX_HTTP_DSTACK_VPC_CP_F_USER].len
            && ngx_http_dstack_vpc_cp_digits(&f[NGX_HTTP_DSTACK_VPC_CP_F_USER],
                                             18) != NGX_OK)
        || (f[NGX_HTTP_DSTACK_VPC_CP_F_STABLE_ID].len
            && ngx_http_dstack_vpc_cp_hex(
                   &f[NGX_HTTP_DSTACK_VPC_CP_F_STABLE_ID],
                   NGX_HTTP_DSTACK_VPC_CP_ID_MAX) != NGX_OK)
        || (f[NGX_HTTP_DSTACK_VPC_CP_F_INSTANCE_ID].len
            && ngx_http_dstack_vpc_cp_hex(
                   &f[NGX_HTTP_DSTACK_VPC_CP_F_INSTANCE_ID],
                   NGX_HTTP_DSTACK_VPC_CP_ID_MAX) != NGX_OK))
    {
        return NGX_ERROR;
    }

    /* peers' relays admit a tunnel by it (docs/wg-relay.md) */
    if (f[NGX_HTTP_DSTACK_VPC_CP_F_APP_ID].len
        != NGX_HTTP_DSTACK_VPC_CP_APP_ID_LEN
        || ngx_http_dstack_vpc_cp_hex(&f[NGX_HTTP_DSTACK_VPC_CP_F_APP_ID],
                                      NGX_HTTP_DSTACK_VPC_CP_APP_ID_LEN)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (f[NGX_HTTP_DSTACK_VPC_CP_F_HOSTNAME].len
        && ngx_http_dstack_vpc_cp_label(&f[NGX_HTTP_DSTACK_VPC_CP_F_HOSTNAME])
           != NGX_OK)
    {
        /* only informative: the name is what counts */
        f[NGX_HTTP_DSTACK_VPC_CP_F_HOSTNAME] = f[NGX_HTTP_DSTACK_VPC_CP_F_NAME];
    }

    p = f[NGX_HTTP_DSTACK_VPC_CP_F_ENDPOINTS].data;
    last = p + f[NGX_HTTP_DSTACK_VPC_CP_F_ENDPOINTS].len;
    n = 0;

    while (p < last) {
        e = ngx_strlchr(p, last, ',');
        if (e == NULL) {
            e = last;
        }

        if (++n > NGX_HTTP_DSTACK_VPC_CP_ENDPOINTS_MAX
            || ngx_http_dstack_vpc_cp_endpoint_valid(p, e - p) != NGX_OK)
        {
            return NGX_ERROR;
        }

        p = e + 1;
    }

    return NGX_OK;
}


/* a key past its expiry: out of the maps (wgctl nodes expire, Expiry) */

ngx_uint_t
ngx_http_dstack_vpc_cp_node_expired(ngx_http_dstack_vpc_cp_node_t *node)
{
    time_t      t;
    ngx_str_t  *f;

    f = &node->f[NGX_HTTP_DSTACK_VPC_CP_F_KEY_EXPIRY];

    if (f->len == 0 || ngx_http_dstack_vpc_cp_digits(f, 18) != NGX_OK) {
        return 0;
    }

    t = ngx_atotm(f->data, f->len);

    return t > 0 && t <= ngx_time();
}


/* a node object (docs/control-plane.md) from a checked record */

ngx_int_t
ngx_http_dstack_vpc_cp_node_json(ngx_http_dstack_vpc_cp_out_t *out,
    ngx_http_dstack_vpc_cp_node_t *node)
{
    u_char      *p, *s, *last, *e;
    size_t       len;
    ngx_str_t   *f, zero;
    ngx_uint_t   i, n;

    f = node->f;
    len = 512 + 4 * NGX_HTTP_DSTACK_VPC_CP_ENDPOINTS_MAX;

    for (i = 0; i < NGX_HTTP_DSTACK_VPC_CP_NODE_FIELDS; i++) {
        len += 2 * f[i].len;
    }

    if (ngx_http_dstack_vpc_cp_out_reserve(out, len) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(out->last,
                    "{\"ID\":%V,\"StableID\":\"%V\",\"Name\":\"%V."
                    NGX_HTTP_DSTACK_VPC_CP_DOMAIN ".\","
                    "\"Key\":\"nodekey:%V\",\"Addresses\":[\"%V/32\"],"
                    "\"AllowedIPs\":[\"%V/32\"],\"Endpoints\":[",
                    &f[NGX_HTTP_DSTACK_VPC_CP_F_ID],
                    f[NGX_HTTP_DSTACK_VPC_CP_F_STABLE_ID].len
                    ? &f[NGX_HTTP_DSTACK_VPC_CP_F_STABLE_ID]
                    : &f[NGX_HTTP_DSTACK_VPC_CP_F_ID],
                    &f[NGX_HTTP_DSTACK_VPC_CP_F_NAME],
                    &f[NGX_HTTP_DSTACK_VPC_CP_F_KEY],
                    &f[NGX_HTTP_DSTACK_VPC_CP_F_IP],
                    &f[NGX_HTTP_DSTACK_VPC_CP_F_IP]);

    s = f[NGX_HTTP_DSTACK_VPC_CP_F_ENDPOINTS].data;
    last = s + f[NGX_HTTP_DSTACK_VPC_CP_F_ENDPOINTS].len;
    n = 0;

    while (s < last) {
        e = ngx_strlchr(s, last, ',');
        if (e == NULL) {
            e = last;
        }

        if (n++) {
            *p++ = ',';
        }

        *p++ = '"';
        p = ngx_cpymem(p, s, e - s);
        *p++ = '"';

        s = e + 1;
    }

    ngx_str_set(&zero, "0");

    p = ngx_sprintf(p, "],\"Online\":%s,\"LastSeen\":\"",
                    (f[NGX_HTTP_DSTACK_VPC_CP_F_ONLINE].len
                     && f[NGX_HTTP_DSTACK_VPC_CP_F_ONLINE].data[0] == '1')
                    ? "true" : "false");
    p = ngx_http_dstack_vpc_cp_time(p, &f[NGX_HTTP_DSTACK_VPC_CP_F_LAST_SEEN]);
    p = ngx_cpymem(p, "\",\"KeyExpiry\":\"", sizeof("\",\"KeyExpiry\":\"") - 1);
    p = ngx_http_dstack_vpc_cp_time(p,
                                    &f[NGX_HTTP_DSTACK_VPC_CP_F_KEY_EXPIRY]);
    p = ngx_sprintf(p, "\",\"Hostinfo\":{\"Hostname\":\"%V\"},\"User\":%V,"
                    "\"AppID\":\"%V\",\"InstanceID\":\"%V\"}",
                    f[NGX_HTTP_DSTACK_VPC_CP_F_HOSTNAME].len
                    ? &f[NGX_HTTP_DSTACK_VPC_CP_F_HOSTNAME]
                    : &f[NGX_HTTP_DSTACK_VPC_CP_F_NAME],
                    f[NGX_HTTP_DSTACK_VPC_CP_F_USER].len
                    ? &f[NGX_HTTP_DSTACK_VPC_CP_F_USER] : &zero,
                    &f[NGX_HTTP_DSTACK_VPC_CP_F_APP_ID],
                    &f[NGX_HTTP_DSTACK_VPC_CP_F_INSTANCE_ID]);

    out->last = p;

    return NGX_OK;
}


/* ip:port or [ip6]:port, as wgctl parses them */

ngx_int_t
ngx_http_dstack_vpc_cp_endpoint_valid(u_char *p, size_t len)
{
    u_char      c, *last, *colon;
    uint32_t    addr;
    ngx_int_t   port;
    ngx_uint_t  i;

    if (len == 0 || len > NGX_HTTP_DSTACK_VPC_CP_ENDPOINT_MAX) {
        return NGX_ERROR;
    }

    last = p + len;

    if (*p == '[') {
        colon = ngx_strlchr(p, last, ']');

        if (colon == NULL || colon + 1 == last || colon[1] != ':'
            || colon - p < 3)
        {
            return NGX_ERROR;
        }

        for (i = 1; p + i < colon; i++) {
            c = ngx_tolower(p[i]);

            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
                  || c == ':' || c == '.' || c == '%'))
            {
                return NGX_ERROR;
            }
        }

        colon++;

    } else {
        colon = ngx_strlchr(p, last, ':');

        if (colon == NULL
            || ngx_dstack_vpc_parse_ipv4(p, colon - p, &addr) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (last - colon < 2 || last - colon > 6) {
        return NGX_ERROR;
    }

    port = ngx_atoi(colon + 1, last - colon - 1);

    return (port < 1 || port > 65535) ? NGX_ERROR : NGX_OK;
}


/* a host name made into a DNS label: lowercase, runs of others to "-" */

void
ngx_http_dstack_vpc_cp_sanitize(ngx_str_t *s)
{
    u_char      c, *d;
    ngx_uint_t  i, dash;

    d = s->data;
    dash = 0;

    for (i = 0; i < s->len; i++) {
        c = ngx_tolower(s->data[i]);

        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
            if (dash && d != s->data) {
                *d++ = '-';
            }

            dash = 0;

            if (d - s->data == NGX_HTTP_DSTACK_VPC_CP_LABEL_MAX) {
                break;
            }

            *d++ = c;

        } else {
            dash = 1;
        }
    }

    s->len = d - s->data;
}


/* a DNS label as the register script writes them */

ngx_int_t
ngx_http_dstack_vpc_cp_label(ngx_str_t *s)
{
    u_char      c;
    ngx_uint_t  i;

    if (s->len == 0 || s->len > NGX_HTTP_DSTACK_VPC_CP_LABEL_MAX
        || s->data[0] == '-' || s->data[s->len - 1] == '-')
    {
        return NGX_ERROR;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_dstack_vpc_cp_digits(ngx_str_t *s, size_t max)
{
    ngx_uint_t  i;

    if (s->len == 0 || s->len > max) {
        return NGX_ERROR;
    }

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < '0' || s->data[i] > '9') {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* lowercase hex */

ngx_int_t
ngx_http_dstack_vpc_cp_hex(ngx_str_t *s, size_t max)
{
    u_char      c;
    ngx_uint_t  i;

    if (s->len == 0 || s->len > max) {
        return NGX_ERROR;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* how deep arrays and objects nest, strings skipped */

ngx_uint_t
ngx_http_dstack_vpc_cp_json_depth(u_char *p, size_t len)
{
    u_char      *last;
    ngx_uint_t   depth, max, string;

    last = p + len;
    depth = 0;
    max = 0;
    string = 0;

    for ( /* void */ ; p < last; p++) {

        if (string) {
            if (*p == '\\') {
                p++;

            } else if (*p == '"') {
                string = 0;
            }

            continue;
        }

        switch (*p) {

        case '"':
            string = 1;
            break;

        case '[':
        case '{':
            if (++depth > max) {
                max = depth;
            }
            break;

        case ']':
        case '}':
            if (depth) {
                depth--;
            }
            break;
        }
    }

    return max;
}


/* Unix seconds as RFC 3339; empty or 0: the zero time */

u_char *
ngx_http_dstack_vpc_cp_time(u_char *p, ngx_str_t *unix_time)
{
    time_t     t;
    ngx_tm_t   tm;

    t = unix_time->len ? ngx_atotm(unix_time->data, unix_time->len) : 0;

    if (t <= 0) {
        return ngx_cpymem(p, NGX_HTTP_DSTACK_VPC_CP_ZERO_TIME,
                          sizeof(NGX_HTTP_DSTACK_VPC_CP_ZERO_TIME) - 1);
    }

    ngx_gmtime(t, &tm);

    return ngx_sprintf(p, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
}


/* --- output -------------------------------------------------------------- */

ngx_int_t
ngx_http_dstack_vpc_cp_out_reserve(ngx_http_dstack_vpc_cp_out_t *out,
    size_t len)
{
    u_char  *p;
    size_t   size, used;

    if (out->start != NULL && (size_t) (out->end - out->last) >= len) {
        return NGX_OK;
    }

    used = out->last - out->start;
    size = out->start ? 2 * (out->end - out->start) : 4096;

    while (size < used + len) {
        size *= 2;
    }

    p = ngx_alloc(size, ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (used) {
        ngx_memcpy(p, out->start, used);
    }

    ngx_free(out->start);

    out->start = p;
    out->last = p + used;
    out->end = p + size;

    return NGX_OK;
}


void
ngx_http_dstack_vpc_cp_out_free(ngx_http_dstack_vpc_cp_out_t *out)
{
    ngx_free(out->start);

    out->start = NULL;
    out->last = NULL;
    out->end = NULL;
}


/* the 4-byte length goes first; frame_end() fills it in */

ngx_int_t
ngx_http_dstack_vpc_cp_frame_start(ngx_http_dstack_vpc_cp_out_t *out)
{
    if (ngx_http_dstack_vpc_cp_out_reserve(out, 4) != NGX_OK) {
        return NGX_ERROR;
    }

    out->last = out->start + 4;

    return NGX_OK;
}


void
ngx_http_dstack_vpc_cp_frame_end(ngx_http_dstack_vpc_cp_out_t *out)
{
    uint32_t  len;

    len = out->last - out->start - 4;

    out->start[0] = (u_char) (len & 0xff);
    out->start[1] = (u_char) ((len >> 8) & 0xff);
    out->start[2] = (u_char) ((len >> 16) & 0xff);
    out->start[3] = (u_char) ((len >> 24) & 0xff);
}
