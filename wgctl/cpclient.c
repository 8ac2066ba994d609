/*
 * wgctl up: the control plane's client (docs/control-plane.md).  Registers
 * the node key with a pre-auth key, holds the map stream open, logs out an
 * ephemeral node and spaces the reconnects.  up.c, the agent loop, calls
 * it; while a request waits, it calls back only through up->ops (the
 * agent's frame and tick functions), never up.c by name.
 */


#include <errno.h>
#include <net/if.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <openssl/rand.h>

#include "up.h"
#include "hosts.h"


static void cp_quote(char *buf, size_t size, const char *text, size_t len);
static void cp_endpoints(wg_up_t *up, json_t *array);
static json_t *cp_answer(const wg_ctrl_response_t *resp, char *err,
    size_t errlen);


/* something the server said, safe to log */

static void
cp_quote(char *buf, size_t size, const char *text, size_t len)
{
    size_t  i, o;

    for (i = 0, o = 0; i < len && o + 4 < size; i++) {
        buf[o++] = (text[i] >= 0x20 && text[i] < 0x7f) ? text[i] : '?';
    }

    if (i < len && size >= 4) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }

    buf[o] = '\0';
}


/*
 * The endpoints announced: --endpoint, else every address of an up,
 * non-loopback interface other than the VPN device and the VPC prefix
 * (link-local IPv6 excluded), with the listen port.
 */

static void
cp_endpoints(wg_up_t *up, json_t *array)
{
    char             text[INET6_ADDRSTRLEN + 16];
    size_t           i, n;
    wg_endpoint_t    ep;
    wg_allowedip_t   aip;
    struct ifaddrs  *ifa, *p;

    for (i = 0; i < up->nendpoints; i++) {
        if (wg_endpoint_format(text, sizeof(text), &up->endpoints[i]) == 0) {
            json_array_append_new(array, json_string(text));
        }
    }

    if (up->nendpoints > 0 || getifaddrs(&ifa) != 0) {
        return;
    }

    n = 0;

    for (p = ifa; p != NULL && n < WG_MAP_MAX_ENDPOINTS; p = p->ifa_next) {
        if (p->ifa_addr == NULL || !(p->ifa_flags & IFF_UP)
            || (p->ifa_flags & IFF_LOOPBACK)
            || strcmp(p->ifa_name, up->ifname) == 0)
        {
            continue;
        }

        memset(&ep, 0, sizeof(ep));
        memset(&aip, 0, sizeof(aip));

        if (p->ifa_addr->sa_family == AF_INET) {
            memcpy(&ep.sin, p->ifa_addr, sizeof(struct sockaddr_in));
            ep.sin.sin_port = htons(up->listen_port);
            aip.family = AF_INET;
            aip.cidr = 32;
            aip.addr.ip4 = ep.sin.sin_addr;

            if (wg_map_prefix_contains(&up->prefix, &aip)) {
                continue;
            }

        } else if (p->ifa_addr->sa_family == AF_INET6) {
            memcpy(&ep.sin6, p->ifa_addr, sizeof(struct sockaddr_in6));

            if (IN6_IS_ADDR_LINKLOCAL(&ep.sin6.sin6_addr)
                || IN6_IS_ADDR_LOOPBACK(&ep.sin6.sin6_addr))
            {
                continue;
            }

            ep.sin6.sin6_port = htons(up->listen_port);
            ep.sin6.sin6_scope_id = 0;
            ep.sin6.sin6_flowinfo = 0;

        } else {
            continue;
        }

        if (wg_endpoint_format(text, sizeof(text), &ep) == 0) {
            json_array_append_new(array, json_string(text));
            n++;
        }
    }

    freeifaddrs(ifa);
}


/* a JSON object answer, or NULL with err saying why */

static json_t *
cp_answer(const wg_ctrl_response_t *resp, char *err, size_t errlen)
{
    json_t        *root;
    json_error_t   jerr;

    if (resp->body == NULL || resp->len == 0) {
        snprintf(err, errlen, "empty answer");
        return NULL;
    }

    if (!wg_json_depth_ok(resp->body, resp->len, WG_MAP_JSON_DEPTH)) {
        snprintf(err, errlen, "answer nested too deep");
        return NULL;
    }

    root = json_loadb(resp->body, resp->len, 0, &jerr);

    if (!json_is_object(root)) {
        json_decref(root);
        snprintf(err, errlen, "answer is not a JSON object");
        return NULL;
    }

    return root;
}


/*
 * 0 registered; -EAGAIN worth retrying (transport, 5xx); -EACCES refused
 * (401/403, or not authorized); -EINVAL our request was refused (400).
 */

int
cp_register(wg_up_t *up)
{
    int                   rc;
    char                 *rest, *body, err[256], q[200];
    size_t                len;
    json_t               *req, *host, *answer, *v;
    const char           *s;
    wg_ctrl_ops_t         ops;
    wg_allowedip_t        aip;
    wg_ctrl_response_t    resp;

    up->state = WG_UP_REGISTERING;

    req = json_object();
    host = json_object();

    if (req == NULL || host == NULL) {
        json_decref(req);
        json_decref(host);
        return -ENOMEM;
    }

    json_object_set_new(host, "Hostname", json_string(up->hostname));
    json_object_set_new(req, "Version", json_integer(1));
    json_object_set_new(req, "NodeKey", json_string(up->node_key));
    json_object_set_new(req, "Hostinfo", host);
    json_object_set_new(req, "Ephemeral", json_boolean(up->ephemeral));

    if (up->instance_id != NULL) {
        json_object_set_new(req, "InstanceID",
                            json_string(up->instance_id));
    }

    if (up->node_type != NULL) {
        json_object_set_new(req, "NodeType", json_string(up->node_type));
    }

    rest = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    if (rest == NULL) {
        return -ENOMEM;
    }

    /*
     * The auth key is spliced in by hand, so that the only copy besides
     * our own is this buffer, zeroed after use (jansson would free its
     * copies unzeroed).  up_options() allowed no character that JSON
     * would escape.
     */
    len = sizeof("{\"Auth\":{\"AuthKey\":\"\"},") + strlen(up->auth_key)
          + strlen(rest);
    body = malloc(len);

    if (body == NULL) {
        free(rest);
        return -ENOMEM;
    }

    snprintf(body, len, "{\"Auth\":{\"AuthKey\":\"%s\"},%s", up->auth_key,
             rest + 1);
    free(rest);

    /* no frames here: the agent's tick alone */
    ops = up->ops;
    ops.frame = NULL;

    up->streaming = 0;

    rc = wg_ctrl_post(&up->ctrl, "/machine/register", body, strlen(body),
                      WG_UP_REQUEST_TIMEOUT, &ops, &resp);

    wg_memzero(body, len);
    free(body);

    if (rc == -ECANCELED) {
        wg_ctrl_response_free(&resp);
        return rc;
    }

    if (rc != 0) {
        wg_log("register: %s", resp.error);
        snprintf(up->last_error, sizeof(up->last_error), "register: %.200s",
                 resp.error);
        wg_ctrl_response_free(&resp);
        return -EAGAIN;
    }

    answer = cp_answer(&resp, err, sizeof(err));

    s = answer ? json_string_value(json_object_get(answer, "Error")) : NULL;
    if (s == NULL) {
        s = answer ? json_string_value(json_object_get(answer, "error"))
                   : NULL;
    }

    if (s != NULL) {
        cp_quote(q, sizeof(q), s, strlen(s));

    } else if (answer == NULL) {
        snprintf(q, sizeof(q), "(%.190s)", err);

    } else {
        q[0] = '\0';
    }

    if (resp.status == 200 && answer == NULL) {
        wg_log("register: %s", err);
        snprintf(up->last_error, sizeof(up->last_error), "register: %.200s",
                 err);
        wg_ctrl_response_free(&resp);
        return -EAGAIN;
    }

    if (resp.status != 200
        || !json_is_true(json_object_get(answer, "MachineAuthorized")))
    {
        wg_log("register: refused with %ld: %s", resp.status,
               q[0] ? q : "not authorized");
        snprintf(up->last_error, sizeof(up->last_error),
                 "register: %ld %s", resp.status, q);

        rc = (resp.status == 400) ? -EINVAL
             : (resp.status == 200 || resp.status == 401
                || resp.status == 403) ? -EACCES
             : -EAGAIN;

        json_decref(answer);
        wg_ctrl_response_free(&resp);
        return rc;
    }

    s = json_string_value(json_object_get(answer, "Name"));

    if (s != NULL && wg_map_name_parse(up->name, sizeof(up->name), s) != 0) {
        cp_quote(q, sizeof(q), s, strlen(s));
        wg_log("register: ignored invalid name \"%s\"", q);
    }

    v = json_array_get(json_object_get(answer, "Addresses"), 0);
    s = json_string_value(v);

    if (s != NULL && wg_allowedip_parse(&aip, s) == 0
        && aip.family == AF_INET && aip.cidr == 32
        && wg_map_prefix_contains(&up->prefix, &aip))
    {
        up->reg_address = aip;
        up->has_reg_address = 1;

    } else if (s != NULL) {
        cp_quote(q, sizeof(q), s, strlen(s));
        wg_log("register: ignored address \"%s\" (not a /32 in the VPC "
               "prefix)", q);
    }

    wg_log("registered as %s.%s (%s)", up->name[0] ? up->name : "?",
           WG_HOSTS_DOMAIN, s ? s : "no address yet");

    up->registered = 1;
    up->ever_registered = 1;
    up->last_error[0] = '\0';
    up->status_dirty = 1;
    up->next_sync = 0;

    json_decref(answer);
    wg_ctrl_response_free(&resp);

    return 0;
}


/*
 * One map stream, until it ends.  0: it ended (the server closed it, or
 * it failed: reconnect after a delay); -EACCES: the key is unknown
 * (register again); -ECANCELED: a signal.
 */

int
cp_stream(wg_up_t *up)
{
    int                  rc;
    char                *body, err[256], q[200];
    json_t              *req, *host, *eps, *answer;
    const char          *s;
    wg_ctrl_ops_t        ops;
    wg_ctrl_response_t   resp;

    req = json_object();
    host = json_object();
    eps = json_array();

    if (req == NULL || host == NULL || eps == NULL) {
        json_decref(req);
        json_decref(host);
        json_decref(eps);
        return -ENOMEM;
    }

    cp_endpoints(up, eps);

    json_object_set_new(host, "Hostname", json_string(up->hostname));
    json_object_set_new(req, "Version", json_integer(1));
    json_object_set_new(req, "NodeKey", json_string(up->node_key));
    json_object_set_new(req, "Endpoints", eps);
    json_object_set_new(req, "Hostinfo", host);
    json_object_set_new(req, "Stream", json_true());

    body = json_dumps(req, JSON_COMPACT);
    json_decref(req);

    if (body == NULL) {
        return -ENOMEM;
    }

    ops = up->ops;

    up->state = WG_UP_CONNECTING;
    up->status_dirty = 1;
    up->streaming = 1;
    up->last_frame = wg_now_ms();

    rc = wg_ctrl_stream(&up->ctrl, "/machine/map", body, strlen(body), &ops,
                        &resp);

    up->streaming = 0;
    free(body);

    if (up->state == WG_UP_CONNECTED) {
        up->state = WG_UP_CONNECTING;
        up->connected_since = 0;
        up->status_dirty = 1;
    }

    if (rc == -ECANCELED) {
        wg_ctrl_response_free(&resp);
        return rc;
    }

    if (rc == 0 && resp.status != 200) {
        answer = cp_answer(&resp, err, sizeof(err));
        s = answer ? json_string_value(json_object_get(answer, "Error"))
                   : NULL;
        if (s == NULL && answer != NULL) {
            s = json_string_value(json_object_get(answer, "error"));
        }

        cp_quote(q, sizeof(q), s ? s : "", s ? strlen(s) : 0);

        wg_log("map: answered %ld%s%s", resp.status, q[0] ? ": " : "", q);
        snprintf(up->last_error, sizeof(up->last_error), "map: %ld %s",
                 resp.status, q);

        json_decref(answer);
        wg_ctrl_response_free(&resp);

        if (resp.status == 401) {
            wg_log("map: the server does not know this node's key; "
                   "registering again");
            return -EACCES;
        }

        return 0;
    }

    if (rc == 0) {
        wg_log("map stream closed by the server");

    } else if (resp.error[0] != '\0') {
        wg_log("map stream: %s", resp.error);
        snprintf(up->last_error, sizeof(up->last_error), "map: %.200s",
                 resp.error);
    }

    wg_ctrl_response_free(&resp);

    return 0;
}


/* POST /machine/logout: an ephemeral node leaves at once */

void
cp_logout(wg_up_t *up)
{
    int                  rc;
    char                 body[128 + sizeof(up->node_key)];
    wg_ctrl_response_t   resp;

    snprintf(body, sizeof(body), "{\"NodeKey\":\"%s\"}", up->node_key);

    rc = wg_ctrl_post(&up->ctrl, "/machine/logout", body, strlen(body),
                      WG_UP_LOGOUT_TIMEOUT, NULL, &resp);

    if (rc != 0) {
        wg_log("logout: %s", resp.error);

    } else if (resp.status != 200) {
        wg_log("logout: answered %ld", resp.status);

    } else {
        wg_log("logged out of the VPC");
    }

    wg_ctrl_response_free(&resp);
}


/* the next delay: doubling from 1 s to the cap, a random half of it off */

long
cp_backoff(wg_up_t *up)
{
    long          delay;
    unsigned int  r;

    up->backoff = up->backoff ? up->backoff * 2 : WG_UP_BACKOFF_MIN;

    if (up->backoff > up->backoff_max) {
        up->backoff = up->backoff_max;
    }

    if (RAND_bytes((unsigned char *) &r, sizeof(r)) != 1) {
        r = (unsigned int) wg_now_ms();
    }

    delay = up->backoff / 2 + (long) (r % (unsigned int) (up->backoff / 2 + 1));

    return delay;
}
