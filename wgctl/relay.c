/*
 * The WireGuard relay engine (relay.h, docs/wg-relay.md): per peer a UDP
 * socket on 127.0.0.1 that the device sends to, and HTTP/1.1 Upgrade
 * tunnels that carry its datagrams, dialled out through the local mesh or
 * accepted from nginx :443 on a Unix socket.
 *
 * One thread runs an epoll loop.  Everything shared sits behind one mutex,
 * which the loop holds while it handles a batch of events and releases
 * while it waits.  Objects are never freed while a batch may still name
 * them: a closed peer or tunnel is marked dead, its socket removed from
 * epoll and closed, and it is freed by the loop after the batch.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "relay.h"
#include "wgdev.h"


#define WG_RELAY_DIAL_TIMEOUT     10000     /* ms: connect + 101 */
#define WG_RELAY_ACCEPT_TIMEOUT   5000      /* ms: the inbound request */
#define WG_RELAY_BACKOFF_MIN      500       /* ms */
#define WG_RELAY_BACKOFF_MAX      30000     /* ms */
#define WG_RELAY_SHORT_LIVED      1000      /* ms: a tunnel that dies this
                                               young counts as a failure */
#define WG_RELAY_PENDING_MAX      64        /* inbound, not yet upgraded */
#define WG_RELAY_PEERS_MAX        65536
#define WG_RELAY_BATCH            32        /* datagrams per syscall */
#define WG_RELAY_SLOT             65536     /* bytes per receive slot */
#define WG_RELAY_INBUF            (128 * 1024)
#define WG_RELAY_HEAD_MAX         1024      /* our request or our 101 */
#define WG_RELAY_READS            8         /* reads per event, fairness */
#define WG_RELAY_SOCKBUF          (1024 * 1024)
#define WG_RELAY_REFUSED_LOGS     20        /* a second */


typedef enum {
    WG_RELAY_OBJ_WAKE = 0,
    WG_RELAY_OBJ_LISTEN,
    WG_RELAY_OBJ_PEER,
    WG_RELAY_OBJ_TUNNEL
} wg_relay_obj_e;


typedef enum {
    WG_RELAY_T_CONNECT = 0,     /* outbound: TCP connect in progress */
    WG_RELAY_T_REQUEST,         /* outbound: request sent, awaiting 101 */
    WG_RELAY_T_ACCEPT,          /* inbound: reading the request */
    WG_RELAY_T_OPEN             /* upgraded, frames both ways */
} wg_relay_state_e;


typedef struct wg_relay_peer_ent_s    wg_relay_peer_ent_t;
typedef struct wg_relay_tunnel_s      wg_relay_tunnel_t;


typedef struct {
    wg_relay_obj_e       type;
    int                  dead;
} wg_relay_obj_t;


struct wg_relay_tunnel_s {
    wg_relay_obj_t       obj;
    int                  fd;
    wg_relay_state_e     state;
    int                  outbound;
    uint32_t             events;
    wg_relay_peer_ent_t *peer;          /* NULL while accepting */

    /* all tunnels, and the dead ones waiting to be freed */
    wg_relay_tunnel_t   *next;
    wg_relay_tunnel_t   *prev;

    uint8_t             *in;            /* WG_RELAY_INBUF */
    size_t               in_len;

    char                 head[WG_RELAY_HEAD_MAX];  /* request or 101 */
    size_t               head_len;
    size_t               head_pos;

    uint8_t             *out;           /* buffer_max, frames */
    size_t               out_pos;
    size_t               out_len;

    long long            deadline;      /* dial or accept */
    long long            opened;        /* when upgraded */
    long long            last_rx;
    long long            last_tx;
    uint64_t             seq;           /* newest wins */
};


struct wg_relay_peer_ent_s {
    wg_relay_obj_t       obj;
    wg_relay_peer_t      p;
    int                  fd;            /* the relay endpoint */
    uint16_t             port;
    wg_relay_tunnel_t   *out;           /* dialled by us */
    wg_relay_tunnel_t   *in;            /* dialled by the peer */
    long                 backoff;       /* ms, 0: none */
    long long            retry;         /* no dial before this */
    int                  fresh;         /* made by this set_peers */
    wg_relay_stats_t     st;
    wg_relay_peer_ent_t *next_dead;
};


struct wg_relay_s {
    wg_relay_conf_t      conf;
    char                *mesh_host;
    char                *listen_path;

    pthread_t            thread;
    pthread_mutex_t      mutex;
    int                  started;
    int                  stop;

    int                  ep;
    int                  wake_fd;
    int                  listen_fd;
    wg_relay_obj_t       wake_obj;
    wg_relay_obj_t       listen_obj;

    wg_relay_peer_ent_t **peers;
    size_t               npeers;

    wg_relay_tunnel_t   *tunnels;       /* live */
    wg_relay_tunnel_t   *dead;          /* to free after the batch */
    wg_relay_peer_ent_t *dead_peers;
    unsigned             pending;       /* inbound, accepting */
    uint64_t             seq;
    long long            next_timer;
    unsigned             seed;
    int                  pending_full_logged;
    long long            refused_second;    /* refusal logs: at most */
    unsigned             refused_logged;    /* WG_RELAY_REFUSED_LOGS */
    unsigned             refused_quiet;     /* a second, then a count */

    /* the loop's receive and send batches */
    uint8_t             *slots;
    struct mmsghdr       msgs[WG_RELAY_BATCH];
    struct iovec         iovs[WG_RELAY_BATCH];
    struct sockaddr_in   addrs[WG_RELAY_BATCH];
};


static void *wg_relay_loop(void *data);
static void wg_relay_sweep(wg_relay_t *r, long long now);
static void wg_relay_reap(wg_relay_t *r);
static void wg_relay_arm(wg_relay_t *r, long long when);
static void wg_relay_log(wg_relay_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void wg_relay_set_error(wg_relay_peer_ent_t *pe, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static long long wg_relay_now(void);
static void wg_relay_short(char *out, const uint8_t *key);

static wg_relay_peer_ent_t *wg_relay_find(wg_relay_t *r,
    const uint8_t *key);
static int wg_relay_peer_open(wg_relay_t *r, const wg_relay_peer_t *p,
    wg_relay_peer_ent_t **out);
static void wg_relay_peer_close(wg_relay_t *r, wg_relay_peer_ent_t *pe);
static void wg_relay_peer_read(wg_relay_t *r, wg_relay_peer_ent_t *pe,
    long long now);
static void wg_relay_peer_failed(wg_relay_t *r, wg_relay_peer_ent_t *pe,
    long long now);

static wg_relay_tunnel_t *wg_relay_tunnel_new(wg_relay_t *r, int fd,
    int outbound);
static void wg_relay_tunnel_close(wg_relay_t *r, wg_relay_tunnel_t *t,
    int failed, long long now);
static void wg_relay_tunnel_discard(wg_relay_tunnel_t *t,
    wg_relay_peer_ent_t *pe);
static void wg_relay_tunnel_events(wg_relay_t *r, wg_relay_tunnel_t *t);
static void wg_relay_tunnel_event(wg_relay_t *r, wg_relay_tunnel_t *t,
    uint32_t events, long long now);
static int wg_relay_tunnel_flush(wg_relay_t *r, wg_relay_tunnel_t *t,
    long long now);
static int wg_relay_tunnel_queue(wg_relay_t *r, wg_relay_tunnel_t *t,
    const uint8_t *data, size_t len);
static int wg_relay_tunnel_frames(wg_relay_t *r, wg_relay_tunnel_t *t,
    long long now);
static int wg_relay_tunnel_response(wg_relay_t *r, wg_relay_tunnel_t *t,
    long long now);
static int wg_relay_tunnel_request(wg_relay_t *r, wg_relay_tunnel_t *t,
    long long now);
static wg_relay_tunnel_t *wg_relay_tunnel_best(wg_relay_peer_ent_t *pe);

static int wg_relay_dial(wg_relay_t *r, wg_relay_peer_ent_t *pe,
    long long now);
static void wg_relay_accept(wg_relay_t *r, long long now);
static int wg_relay_listen(wg_relay_t *r);


/* the wire */

static int
wg_relay_hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


static int
wg_relay_key_from_hex(uint8_t *key, const char *p, size_t len)
{
    char  text[WG_KEY_HEX_LEN + 1];

    if (len != WG_KEY_HEX_LEN) {
        return -1;
    }

    memcpy(text, p, len);
    text[len] = '\0';

    return wg_key_from_hex(key, text);
}


/* the end of the headers: the offset past the empty line, 0 if absent */

static size_t
wg_relay_headers_end(const char *buf, size_t len)
{
    size_t  i;

    for (i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n') {
            continue;
        }

        if (buf[i + 1] == '\n') {
            return i + 2;
        }

        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n') {
            return i + 3;
        }
    }

    return 0;
}


/*
 * Walks the header lines of [p, end): calls back with each name and
 * value, trimmed.  -1 on a line that is not "name: value".
 */

typedef int (*wg_relay_header_pt)(void *data, const char *name,
    size_t nlen, const char *value, size_t vlen);

static int
wg_relay_headers(const char *p, const char *end, wg_relay_header_pt handler,
    void *data)
{
    const char  *eol, *colon, *name, *value, *vend;

    while (p < end) {
        eol = memchr(p, '\n', end - p);
        if (eol == NULL) {
            eol = end;
        }

        vend = eol;
        if (vend > p && vend[-1] == '\r') {
            vend--;
        }

        if (vend == p) {
            break;              /* the empty line */
        }

        colon = memchr(p, ':', vend - p);
        if (colon == NULL || colon == p) {
            return -1;
        }

        name = p;

        for (value = colon + 1; value < vend && (*value == ' '
                                                 || *value == '\t');
             value++)
        {
            /* void */
        }

        while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t')) {
            vend--;
        }

        if (colon[-1] == ' ' || colon[-1] == '\t') {
            return -1;          /* no space before the colon */
        }

        if (handler(data, name, colon - name, value, vend - value) != 0) {
            return -1;
        }

        p = eol + 1;
    }

    return 0;
}


#define wg_relay_is(name, nlen, lit)                                         \
    ((nlen) == sizeof(lit) - 1 && strncasecmp(name, lit, nlen) == 0)


static int
wg_relay_request_header(void *data, const char *name, size_t nlen,
    const char *value, size_t vlen)
{
    size_t               i;
    wg_relay_request_t  *rq = data;

    if (wg_relay_is(name, nlen, "Upgrade")) {
        if (rq->upgrade) {
            rq->bad = 1;
        }

        rq->upgrade = wg_relay_is(value, vlen, WG_RELAY_PROTOCOL);

    } else if (wg_relay_is(name, nlen, WG_RELAY_HDR_FROM)) {
        if (rq->has_from
            || wg_relay_key_from_hex(rq->from, value, vlen) != 0)
        {
            rq->bad = 1;
        }

        rq->has_from = 1;

    } else if (wg_relay_is(name, nlen, WG_RELAY_HDR_TO)) {
        if (rq->has_to || wg_relay_key_from_hex(rq->to, value, vlen) != 0) {
            rq->bad = 1;
        }

        rq->has_to = 1;

    } else if (wg_relay_is(name, nlen, "X-Dstack-App-Id")) {
        if (rq->has_app || vlen == 0 || vlen > WG_RELAY_APP_MAX) {
            rq->bad = 1;
            vlen = 0;
        }

        for (i = 0; i < vlen; i++) {
            if (wg_relay_hex_value((unsigned char) value[i]) < 0) {
                rq->bad = 1;
                vlen = 0;
                break;
            }
        }

        memcpy(rq->app, value, vlen);
        rq->app[vlen] = '\0';
        rq->has_app = 1;
    }

    return 0;
}


long
wg_relay_parse_request(const char *buf, size_t len, wg_relay_request_t *rq)
{
    size_t       hlen, plen;
    const char  *p, *sp, *end, *eol;

    memset(rq, 0, sizeof(*rq));

    hlen = wg_relay_headers_end(buf, len < WG_RELAY_HEADERS_MAX
                                     ? len : WG_RELAY_HEADERS_MAX);
    if (hlen == 0) {
        return len >= WG_RELAY_HEADERS_MAX ? -1 : 0;
    }

    end = buf + hlen;

    /* the request line: METHOD SP PATH SP HTTP/1.x */

    eol = memchr(buf, '\n', hlen);
    p = buf;

    sp = memchr(p, ' ', eol - p);
    if (sp == NULL) {
        return -1;
    }

    rq->get = (sp - p == 3 && memcmp(p, "GET", 3) == 0);

    p = sp + 1;
    sp = memchr(p, ' ', eol - p);
    if (sp == NULL) {
        return -1;
    }

    plen = sp - p;
    rq->path = (plen == sizeof(WG_RELAY_PATH) - 1
                && memcmp(p, WG_RELAY_PATH, plen) == 0);

    p = sp + 1;
    if (eol - p < 8 || memcmp(p, "HTTP/1.", 7) != 0) {
        return -1;
    }

    if (wg_relay_headers(eol + 1, end, wg_relay_request_header, rq) != 0) {
        return -1;
    }

    return (long) hlen;
}


int
wg_relay_request_verdict(const wg_relay_request_t *rq,
    const uint8_t self_key[32], const char *peer_app, const char **why)
{
    if (!rq->get) {
        *why = "method not allowed";
        return 400;
    }

    if (!rq->path) {
        *why = "no such path";
        return 404;
    }

    if (rq->bad) {
        *why = "malformed or repeated header";
        return 400;
    }

    if (!rq->upgrade) {
        *why = "upgrade to " WG_RELAY_PROTOCOL " required";
        return 400;
    }

    if (!rq->has_from || !rq->has_to) {
        *why = "missing " WG_RELAY_HDR_FROM " or " WG_RELAY_HDR_TO;
        return 400;
    }

    if (memcmp(rq->to, self_key, 32) != 0) {
        *why = "not addressed to this node";
        return 403;
    }

    if (peer_app == NULL) {
        *why = "unknown peer";
        return 403;
    }

    if (!rq->has_app) {
        *why = "no verified app id";
        return 403;
    }

    if (strcasecmp(rq->app, peer_app) != 0) {
        *why = "app id does not match the peer's";
        return 403;
    }

    *why = NULL;

    return 101;
}


static int
wg_relay_response_header(void *data, const char *name, size_t nlen,
    const char *value, size_t vlen)
{
    long         n;
    size_t       i;
    long        *content_length = data;

    if (!wg_relay_is(name, nlen, "Content-Length")) {
        return 0;
    }

    if (vlen == 0 || vlen > 9) {
        return -1;
    }

    n = 0;

    for (i = 0; i < vlen; i++) {
        if (value[i] < '0' || value[i] > '9') {
            return -1;
        }

        n = n * 10 + (value[i] - '0');
    }

    *content_length = n;

    return 0;
}


long
wg_relay_parse_response(const char *buf, size_t len, int *status,
    long *content_length)
{
    size_t       hlen;
    const char  *eol;

    *status = 0;
    *content_length = -1;

    hlen = wg_relay_headers_end(buf, len < WG_RELAY_HEADERS_MAX
                                     ? len : WG_RELAY_HEADERS_MAX);
    if (hlen == 0) {
        return len >= WG_RELAY_HEADERS_MAX ? -1 : 0;
    }

    /* HTTP/1.x DDD */

    if (hlen < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' '
        || buf[9] < '1' || buf[9] > '5'
        || buf[10] < '0' || buf[10] > '9'
        || buf[11] < '0' || buf[11] > '9')
    {
        return -1;
    }

    *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + buf[11] - '0';

    eol = memchr(buf, '\n', hlen);

    if (wg_relay_headers(eol + 1, buf + hlen, wg_relay_response_header,
                         content_length)
        != 0)
    {
        return -1;
    }

    return (long) hlen;
}


size_t
wg_relay_error_text(const char *body, size_t len, char *out, size_t size)
{
    int          json;
    size_t       n;
    const char  *p, *end;

    if (size == 0) {
        return 0;
    }

    end = body + len;
    p = (len >= 7) ? memmem(body, len, "\"error\"", 7) : NULL;
    json = 0;

    /* "error" : "..." */

    if (p != NULL) {
        p += 7;

        while (p < end && (*p == ' ' || *p == ':' || *p == '\t')) {
            p++;
        }

        if (p < end && *p == '"') {
            p++;
            json = 1;
        }
    }

    if (!json) {
        p = body;
    }

    for (n = 0; p < end && n + 1 < size; p++) {
        if (json && *p == '\\' && p + 1 < end) {
            p++;

        } else if ((json && *p == '"') || *p == '\r' || *p == '\n') {
            break;
        }

        out[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    }

    out[n] = '\0';

    return n;
}


int
wg_relay_datagram_valid(const uint8_t *d, size_t len)
{
    if (len < 4 || d[1] != 0 || d[2] != 0 || d[3] != 0) {
        return 0;
    }

    switch (d[0]) {
    case 1:                     /* handshake initiation */
        return len == 148;
    case 2:                     /* handshake response */
        return len == 92;
    case 3:                     /* cookie reply */
        return len == 64;
    case 4:                     /* transport data */
        return len >= 32;
    default:
        return 0;
    }
}


/* the engine */

int
wg_relay_start(wg_relay_t **relay, const wg_relay_conf_t *conf)
{
    int                  rc;
    sigset_t             all, old;
    wg_relay_t          *r;
    struct epoll_event   ev;

    *relay = NULL;

    r = calloc(1, sizeof(wg_relay_t));
    if (r == NULL) {
        return -ENOMEM;
    }

    r->conf = *conf;
    r->ep = -1;
    r->wake_fd = -1;
    r->listen_fd = -1;
    r->wake_obj.type = WG_RELAY_OBJ_WAKE;
    r->listen_obj.type = WG_RELAY_OBJ_LISTEN;
    r->seed = (unsigned) getpid() ^ (unsigned) wg_relay_now();
    r->next_timer = wg_relay_now() + 1000;

    if (r->conf.keepalive <= 0) {
        r->conf.keepalive = WG_RELAY_KEEPALIVE;
    }

    if (r->conf.buffer_max == 0) {
        r->conf.buffer_max = WG_RELAY_BUFFER;
    }

    if (pthread_mutex_init(&r->mutex, NULL) != 0) {
        free(r);
        return -ENOMEM;
    }

    rc = -ENOMEM;

    r->mesh_host = strdup(conf->mesh_host != NULL ? conf->mesh_host
                                                  : "127.0.0.1");
    r->slots = malloc((size_t) WG_RELAY_BATCH * WG_RELAY_SLOT);

    if (r->mesh_host == NULL || r->slots == NULL) {
        goto failed;
    }

    r->conf.mesh_host = r->mesh_host;

    if (conf->listen_path != NULL) {
        r->listen_path = strdup(conf->listen_path);
        if (r->listen_path == NULL) {
            goto failed;
        }

        r->conf.listen_path = r->listen_path;
    }

    r->ep = epoll_create1(EPOLL_CLOEXEC);
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    if (r->ep == -1 || r->wake_fd == -1) {
        rc = -errno;
        goto failed;
    }

    ev.events = EPOLLIN;
    ev.data.ptr = &r->wake_obj;

    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, r->wake_fd, &ev) == -1) {
        rc = -errno;
        goto failed;
    }

    if (r->listen_path != NULL) {
        rc = wg_relay_listen(r);
        if (rc != 0) {
            goto failed;
        }
    }

    /* the thread takes no signals: they stay with the agent's thread,
       whose waits they are meant to interrupt */

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = -pthread_create(&r->thread, NULL, wg_relay_loop, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (rc != 0) {
        goto failed;
    }

    r->started = 1;
    *relay = r;

    return 0;

failed:

    wg_relay_stop(r);

    return rc;
}


static int
wg_relay_listen(wg_relay_t *r)
{
    int                  fd, rc;
    struct stat          sb;
    struct sockaddr_un   sun;
    struct epoll_event   ev;

    if (strlen(r->listen_path) >= sizeof(sun.sun_path)) {
        wg_relay_log(r, "relay: listen path \"%s\" is too long",
                     r->listen_path);
        return -ENAMETOOLONG;
    }

    /* a stale socket from an earlier run goes; anything else stays */

    if (lstat(r->listen_path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            wg_relay_log(r, "relay: \"%s\" exists and is not a socket",
                         r->listen_path);
            return -EEXIST;
        }

        if (unlink(r->listen_path) == -1) {
            return -errno;
        }
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return -errno;
    }

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, r->listen_path);

    if (bind(fd, (struct sockaddr *) &sun, sizeof(sun)) == -1
        || chmod(r->listen_path, 0660) == -1
        || (r->conf.listen_gid >= 0
            && chown(r->listen_path, (uid_t) -1, (gid_t) r->conf.listen_gid)
               == -1)
        || listen(fd, 128) == -1)
    {
        rc = -errno;
        wg_relay_log(r, "relay: listen on \"%s\" failed: %s",
                     r->listen_path, strerror(errno));
        close(fd);
        return rc;
    }

    ev.events = EPOLLIN;
    ev.data.ptr = &r->listen_obj;

    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
        rc = -errno;
        close(fd);
        return rc;
    }

    r->listen_fd = fd;

    return 0;
}


void
wg_relay_stop(wg_relay_t *r)
{
    size_t    i;
    uint64_t  one;

    if (r == NULL) {
        return;
    }

    if (r->started) {
        pthread_mutex_lock(&r->mutex);
        r->stop = 1;
        pthread_mutex_unlock(&r->mutex);

        one = 1;
        if (write(r->wake_fd, &one, sizeof(one)) == -1) {
            /* the counter cannot overflow here; the loop wakes anyway */
        }

        pthread_join(r->thread, NULL);
    }

    for (i = 0; i < r->npeers; i++) {
        wg_relay_peer_close(r, r->peers[i]);
    }

    r->npeers = 0;

    while (r->tunnels != NULL) {
        wg_relay_tunnel_close(r, r->tunnels, 0, 0);
    }

    wg_relay_reap(r);

    if (r->listen_fd != -1) {
        close(r->listen_fd);
        unlink(r->listen_path);
    }

    if (r->wake_fd != -1) {
        close(r->wake_fd);
    }

    if (r->ep != -1) {
        close(r->ep);
    }

    pthread_mutex_destroy(&r->mutex);
    free(r->peers);
    free(r->slots);
    free(r->mesh_host);
    free(r->listen_path);
    free(r);
}


/* the table is sorted by key: lookups by bsearch, updates by a merge */

static int
wg_relay_input_cmp(const void *one, const void *two)
{
    const wg_relay_peer_t  *a = *(const wg_relay_peer_t * const *) one;
    const wg_relay_peer_t  *b = *(const wg_relay_peer_t * const *) two;

    return memcmp(a->key, b->key, 32);
}


static int
wg_relay_find_cmp(const void *key, const void *ent)
{
    const wg_relay_peer_ent_t  *pe = *(wg_relay_peer_ent_t * const *) ent;

    return memcmp(key, pe->p.key, 32);
}


int
wg_relay_set_peers(wg_relay_t *r, const wg_relay_peer_t *peers, size_t n)
{
    int                     rc, c;
    size_t                  i, j;
    uint8_t                *keep;
    wg_relay_peer_ent_t    *pe, **table;
    const wg_relay_peer_t **in;

    if (n > WG_RELAY_PEERS_MAX) {
        return -E2BIG;
    }

    in = calloc(n + 1, sizeof(wg_relay_peer_t *));
    table = calloc(n + 1, sizeof(wg_relay_peer_ent_t *));
    keep = NULL;

    if (in == NULL || table == NULL) {
        free(in);
        free(table);
        return -ENOMEM;
    }

    for (i = 0; i < n; i++) {
        in[i] = &peers[i];
    }

    qsort(in, n, sizeof(wg_relay_peer_t *), wg_relay_input_cmp);

    for (i = 1; i < n; i++) {
        if (memcmp(in[i - 1]->key, in[i]->key, 32) == 0) {
            free(in);
            free(table);
            return -EINVAL;
        }
    }

    pthread_mutex_lock(&r->mutex);

    keep = calloc(r->npeers + 1, 1);

    if (keep == NULL) {
        rc = -ENOMEM;
        goto done;
    }

    /* both sorted: walk them side by side */

    for (i = 0, j = 0; i < n; i++) {
        pe = NULL;

        while (j < r->npeers) {
            c = memcmp(r->peers[j]->p.key, in[i]->key, 32);

            if (c > 0) {
                break;
            }

            if (c == 0) {
                pe = r->peers[j];
                keep[j++] = 1;
                break;
            }

            j++;
        }

        if (pe == NULL) {
            rc = wg_relay_peer_open(r, in[i], &pe);
            if (rc != 0) {
                /* undo: the ones made here go, the old table stays */
                for (j = 0; j < i; j++) {
                    if (table[j]->fresh) {
                        wg_relay_peer_close(r, table[j]);
                    }
                }

                goto done;
            }

            pe->fresh = 1;
        }

        table[i] = pe;
    }

    for (i = 0; i < n; i++) {
        pe = table[i];

        if (pe->fresh) {
            pe->fresh = 0;
            continue;
        }

        /* a peer that moved to another app or instance: its tunnels were
           authorised for the old one */

        if (strncasecmp(pe->p.app, in[i]->app, WG_RELAY_APP_MAX) != 0
            || strncmp(pe->p.instance, in[i]->instance,
                       WG_RELAY_INSTANCE_MAX) != 0)
        {
            if (pe->out != NULL) {
                wg_relay_tunnel_close(r, pe->out, 0, 0);
            }

            if (pe->in != NULL) {
                wg_relay_tunnel_close(r, pe->in, 0, 0);
            }

            pe->backoff = 0;
            pe->retry = 0;
        }

        pe->p = *in[i];
        pe->p.app[WG_RELAY_APP_MAX] = '\0';
        pe->p.instance[WG_RELAY_INSTANCE_MAX] = '\0';
    }

    for (j = 0; j < r->npeers; j++) {
        if (!keep[j]) {
            wg_relay_peer_close(r, r->peers[j]);
        }
    }

    free(r->peers);
    r->peers = table;
    r->npeers = n;
    table = NULL;
    rc = 0;

done:

    pthread_mutex_unlock(&r->mutex);

    free(in);
    free(table);
    free(keep);

    return rc;
}


void
wg_relay_set_device_port(wg_relay_t *r, uint16_t port)
{
    pthread_mutex_lock(&r->mutex);
    r->conf.device_port = port;
    pthread_mutex_unlock(&r->mutex);
}


int
wg_relay_endpoint(wg_relay_t *r, const uint8_t key[32],
    struct sockaddr_in *sin)
{
    int                   rc;
    wg_relay_peer_ent_t  *pe;

    pthread_mutex_lock(&r->mutex);

    pe = wg_relay_find(r, key);

    if (pe == NULL) {
        rc = -ENOENT;

    } else {
        memset(sin, 0, sizeof(*sin));
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin->sin_port = htons(pe->port);
        rc = 0;
    }

    pthread_mutex_unlock(&r->mutex);

    return rc;
}


int
wg_relay_stats(wg_relay_t *r, const uint8_t key[32], wg_relay_stats_t *st)
{
    int                   rc;
    wg_relay_peer_ent_t  *pe;

    pthread_mutex_lock(&r->mutex);

    pe = wg_relay_find(r, key);

    if (pe == NULL) {
        rc = -ENOENT;

    } else {
        *st = pe->st;
        st->tunnels = (pe->out != NULL && pe->out->state == WG_RELAY_T_OPEN)
                      + (pe->in != NULL);
        st->dialing = (pe->out != NULL && pe->out->state != WG_RELAY_T_OPEN);
        rc = 0;
    }

    pthread_mutex_unlock(&r->mutex);

    return rc;
}


/* the loop */

static void *
wg_relay_loop(void *data)
{
    wg_relay_t  *r = data;

    int                  i, n, timeout;
    uint64_t             v;
    long long            now;
    wg_relay_obj_t      *obj;
    struct epoll_event   events[64];

    pthread_mutex_lock(&r->mutex);

    while (!r->stop) {
        now = wg_relay_now();

        if (now >= r->next_timer) {
            wg_relay_sweep(r, now);
        }

        timeout = (int) (r->next_timer - now);
        if (timeout < 0) {
            timeout = 0;
        }

        wg_relay_reap(r);

        pthread_mutex_unlock(&r->mutex);

        n = epoll_wait(r->ep, events, 64, timeout);

        pthread_mutex_lock(&r->mutex);

        if (n == -1) {
            if (errno != EINTR) {
                wg_relay_log(r, "relay: epoll_wait() failed: %s",
                             strerror(errno));
                break;
            }

            continue;
        }

        now = wg_relay_now();

        for (i = 0; i < n && !r->stop; i++) {
            obj = events[i].data.ptr;

            if (obj->dead) {
                continue;
            }

            switch (obj->type) {

            case WG_RELAY_OBJ_WAKE:
                if (read(r->wake_fd, &v, sizeof(v)) == -1) {
                    /* EAGAIN: another wake got it */
                }
                break;

            case WG_RELAY_OBJ_LISTEN:
                wg_relay_accept(r, now);
                break;

            case WG_RELAY_OBJ_PEER:
                wg_relay_peer_read(r, (wg_relay_peer_ent_t *) obj, now);
                break;

            case WG_RELAY_OBJ_TUNNEL:
                wg_relay_tunnel_event(r, (wg_relay_tunnel_t *) obj,
                                      events[i].events, now);
                break;
            }
        }

        wg_relay_reap(r);
    }

    pthread_mutex_unlock(&r->mutex);

    return NULL;
}


static void
wg_relay_sweep(wg_relay_t *r, long long now)
{
    char                key[17];
    long long           next, ka;
    wg_relay_tunnel_t  *t, *tn;

    ka = r->conf.keepalive;
    next = now + ka;

    for (t = r->tunnels; t != NULL; t = tn) {
        tn = t->next;

        if (t->state != WG_RELAY_T_OPEN) {
            if (now >= t->deadline) {
                if (t->peer != NULL) {
                    wg_relay_short(key, t->peer->p.key);
                    wg_relay_set_error(t->peer, "timed out %s",
                                       t->state == WG_RELAY_T_CONNECT
                                       ? "connecting to the mesh"
                                       : "awaiting the upgrade");
                    wg_relay_log(r, "relay: peer \"%s\": %s", key,
                                 t->peer->st.last_error);

                } else {
                    wg_relay_log(r, "relay: inbound connection sent no "
                                 "complete request in %d ms",
                                 WG_RELAY_ACCEPT_TIMEOUT);
                }

                wg_relay_tunnel_close(r, t, 1, now);
                continue;
            }

            if (t->deadline < next) {
                next = t->deadline;
            }

            continue;
        }

        if (now - t->last_rx >= 3 * ka) {
            wg_relay_set_error(t->peer, "tunnel idle for %lld ms",
                               now - t->last_rx);
            wg_relay_tunnel_close(r, t, 0, now);
            continue;
        }

        if (now - t->last_tx >= ka) {
            if (t->out_len == t->out_pos
                && wg_relay_tunnel_queue(r, t, NULL, 0) == 0)
            {
                if (wg_relay_tunnel_flush(r, t, now) != 0) {
                    continue;
                }
            }

            t->last_tx = now;
        }

        if (t->last_tx + ka < next) {
            next = t->last_tx + ka;
        }

        if (t->last_rx + 3 * ka < next) {
            next = t->last_rx + 3 * ka;
        }
    }

    r->next_timer = next;
}


/* only the loop arms timers: it computes its wait after each batch */

static void
wg_relay_arm(wg_relay_t *r, long long when)
{
    if (when < r->next_timer) {
        r->next_timer = when;
    }
}


static void
wg_relay_reap(wg_relay_t *r)
{
    wg_relay_tunnel_t    *t;
    wg_relay_peer_ent_t  *pe;

    while (r->dead != NULL) {
        t = r->dead;
        r->dead = t->next;
        free(t->in);
        free(t->out);
        free(t);
    }

    while (r->dead_peers != NULL) {
        pe = r->dead_peers;
        r->dead_peers = pe->next_dead;
        wg_memzero(&pe->p, sizeof(pe->p));
        free(pe);
    }
}


/* peers */

static wg_relay_peer_ent_t *
wg_relay_find(wg_relay_t *r, const uint8_t *key)
{
    wg_relay_peer_ent_t  **pe;

    if (r->npeers == 0) {
        return NULL;
    }

    pe = bsearch(key, r->peers, r->npeers, sizeof(wg_relay_peer_ent_t *),
                 wg_relay_find_cmp);

    return pe != NULL ? *pe : NULL;
}


static int
wg_relay_peer_open(wg_relay_t *r, const wg_relay_peer_t *p,
    wg_relay_peer_ent_t **out)
{
    int                   fd, rc, size;
    socklen_t             len;
    struct sockaddr_in    sin;
    struct epoll_event    ev;
    wg_relay_peer_ent_t  *pe;

    pe = calloc(1, sizeof(wg_relay_peer_ent_t));
    if (pe == NULL) {
        return -ENOMEM;
    }

    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        rc = -errno;
        free(pe);
        return rc;
    }

    size = WG_RELAY_SOCKBUF;
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(sin);

    pe->obj.type = WG_RELAY_OBJ_PEER;
    pe->p = *p;
    pe->p.app[WG_RELAY_APP_MAX] = '\0';
    pe->p.instance[WG_RELAY_INSTANCE_MAX] = '\0';
    pe->fd = fd;

    ev.events = EPOLLIN;
    ev.data.ptr = pe;

    if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) == -1
        || getsockname(fd, (struct sockaddr *) &sin, &len) == -1
        || epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) == -1)
    {
        rc = -errno;
        close(fd);
        free(pe);
        return rc;
    }

    pe->port = ntohs(sin.sin_port);
    *out = pe;

    return 0;
}


static void
wg_relay_peer_close(wg_relay_t *r, wg_relay_peer_ent_t *pe)
{
    if (pe->out != NULL) {
        wg_relay_tunnel_close(r, pe->out, 0, 0);
    }

    if (pe->in != NULL) {
        wg_relay_tunnel_close(r, pe->in, 0, 0);
    }

    (void) epoll_ctl(r->ep, EPOLL_CTL_DEL, pe->fd, NULL);
    close(pe->fd);

    pe->obj.dead = 1;
    pe->next_dead = r->dead_peers;
    r->dead_peers = pe;
}


/* the device sent datagrams to the peer's relay endpoint */

static void
wg_relay_peer_read(wg_relay_t *r, wg_relay_peer_ent_t *pe, long long now)
{
    int                  i, n, round, dirty, valid;
    size_t               len;
    wg_relay_tunnel_t   *t;
    struct sockaddr_in  *sin;

    for (round = 0; round < WG_RELAY_READS; round++) {

        for (i = 0; i < WG_RELAY_BATCH; i++) {
            r->iovs[i].iov_base = r->slots + (size_t) i * WG_RELAY_SLOT;
            r->iovs[i].iov_len = WG_RELAY_SLOT;
            memset(&r->msgs[i].msg_hdr, 0, sizeof(struct msghdr));
            r->msgs[i].msg_hdr.msg_iov = &r->iovs[i];
            r->msgs[i].msg_hdr.msg_iovlen = 1;
            r->msgs[i].msg_hdr.msg_name = &r->addrs[i];
            r->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
        }

        n = recvmmsg(pe->fd, r->msgs, WG_RELAY_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            return;
        }

        /* only the device, from its own port, may use the endpoint */

        for (i = 0, valid = 0; i < n; i++) {
            sin = &r->addrs[i];

            if (r->msgs[i].msg_hdr.msg_namelen != sizeof(struct sockaddr_in)
                || sin->sin_family != AF_INET
                || sin->sin_addr.s_addr != htonl(INADDR_LOOPBACK)
                || r->conf.device_port == 0
                || ntohs(sin->sin_port) != r->conf.device_port
                || (r->msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
                || r->msgs[i].msg_len == 0)
            {
                r->msgs[i].msg_len = 0;
                continue;
            }

            valid++;
        }

        if (valid == 0) {
            goto next;
        }

        t = wg_relay_tunnel_best(pe);

        if (t == NULL) {
            t = pe->out;        /* dialling: queue within its buffer */
        }

        if (t == NULL && now >= pe->retry) {
            if (wg_relay_dial(r, pe, now) == 0) {
                t = pe->out;
            }
        }

        dirty = 0;

        for (i = 0; i < n; i++) {
            len = r->msgs[i].msg_len;

            if (len == 0) {
                continue;
            }

            if (t == NULL
                || wg_relay_tunnel_queue(r, t, r->iovs[i].iov_base, len)
                   != 0)
            {
                pe->st.drops++;
                continue;
            }

            pe->st.tx_packets++;
            pe->st.tx_bytes += len;
            dirty = 1;
        }

        if (dirty && t->state == WG_RELAY_T_OPEN) {
            if (wg_relay_tunnel_flush(r, t, now) != 0) {
                return;
            }
        }

    next:

        if (n < WG_RELAY_BATCH) {
            return;
        }
    }
}


/* an outbound tunnel failed: back off 0.5 s doubling to 30 s, +-20% */

static void
wg_relay_peer_failed(wg_relay_t *r, wg_relay_peer_ent_t *pe, long long now)
{
    long  delay, jitter;

    if (pe->backoff == 0) {
        pe->backoff = WG_RELAY_BACKOFF_MIN;

    } else {
        pe->backoff *= 2;

        if (pe->backoff > WG_RELAY_BACKOFF_MAX) {
            pe->backoff = WG_RELAY_BACKOFF_MAX;
        }
    }

    jitter = pe->backoff / 5;
    delay = pe->backoff - jitter + (long) (rand_r(&r->seed)
                                           % (unsigned) (2 * jitter + 1));

    pe->retry = now + delay;
}


/* tunnels */

static wg_relay_tunnel_t *
wg_relay_tunnel_new(wg_relay_t *r, int fd, int outbound)
{
    wg_relay_tunnel_t   *t;
    struct epoll_event   ev;

    t = calloc(1, sizeof(wg_relay_tunnel_t));
    if (t == NULL) {
        return NULL;
    }

    t->in = malloc(WG_RELAY_INBUF);

    if (t->in == NULL) {
        free(t);
        return NULL;
    }

    t->obj.type = WG_RELAY_OBJ_TUNNEL;
    t->fd = fd;
    t->outbound = outbound;
    t->events = outbound ? EPOLLOUT : EPOLLIN;

    ev.events = t->events;
    ev.data.ptr = t;

    if (epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
        free(t->in);
        free(t);
        return NULL;
    }

    t->next = r->tunnels;
    if (r->tunnels != NULL) {
        r->tunnels->prev = t;
    }

    r->tunnels = t;

    return t;
}


static void
wg_relay_tunnel_close(wg_relay_t *r, wg_relay_tunnel_t *t, int failed,
    long long now)
{
    char                  key[17];
    wg_relay_peer_ent_t  *pe;

    pe = t->peer;

    if (pe != NULL && t->state == WG_RELAY_T_OPEN && now != 0) {
        wg_relay_short(key, pe->p.key);
        wg_relay_log(r, "relay: peer \"%s\": %s tunnel closed: %s", key,
                     t->outbound ? "outbound" : "inbound",
                     pe->st.last_error[0] ? pe->st.last_error : "closed");
    }

    if (pe != NULL) {
        if (pe->out == t) {
            pe->out = NULL;

            /* an established tunnel that ends is no failure, unless it
               ends at once: then the far side refuses in its own way */

            if (t->state == WG_RELAY_T_OPEN) {
                if (now - t->opened < WG_RELAY_SHORT_LIVED && now != 0) {
                    failed = 1;
                }

            } else if (now != 0) {
                failed = 1;
            }

            if (failed && now != 0) {
                wg_relay_peer_failed(r, pe, now);
            }
        }

        if (pe->in == t) {
            pe->in = NULL;
        }
    }

    if (pe != NULL) {
        wg_relay_tunnel_discard(t, pe);
    }

    if (t->state == WG_RELAY_T_ACCEPT && r->pending > 0) {
        r->pending--;
    }

    (void) epoll_ctl(r->ep, EPOLL_CTL_DEL, t->fd, NULL);
    close(t->fd);

    if (t->prev != NULL) {
        t->prev->next = t->next;

    } else {
        r->tunnels = t->next;
    }

    if (t->next != NULL) {
        t->next->prev = t->prev;
    }

    t->obj.dead = 1;
    t->peer = NULL;
    t->prev = NULL;
    t->next = r->dead;
    r->dead = t;
}


/* the datagrams still queued on a tunnel that closes count as drops */

static void
wg_relay_tunnel_discard(wg_relay_tunnel_t *t, wg_relay_peer_ent_t *pe)
{
    size_t  pos, dlen;

    pos = t->out_pos;

    while (t->out != NULL
           && wg_relay_frame_parse(t->out + pos, t->out_len - pos, &dlen))
    {
        if (dlen != 0) {
            pe->st.drops++;
        }

        pos += WG_RELAY_FRAME_HDR + dlen;
    }

    t->out_pos = 0;
    t->out_len = 0;
}


static void
wg_relay_tunnel_events(wg_relay_t *r, wg_relay_tunnel_t *t)
{
    uint32_t             events;
    struct epoll_event   ev;

    if (t->state == WG_RELAY_T_CONNECT) {
        events = EPOLLOUT;

    } else {
        events = EPOLLIN;

        if (t->head_pos < t->head_len
            || (t->state == WG_RELAY_T_OPEN && t->out_pos < t->out_len))
        {
            events |= EPOLLOUT;
        }
    }

    if (events == t->events) {
        return;
    }

    t->events = events;
    ev.events = events;
    ev.data.ptr = t;

    (void) epoll_ctl(r->ep, EPOLL_CTL_MOD, t->fd, &ev);
}


/* the newest upgraded tunnel of the peer */

static wg_relay_tunnel_t *
wg_relay_tunnel_best(wg_relay_peer_ent_t *pe)
{
    wg_relay_tunnel_t  *o, *i;

    o = (pe->out != NULL && pe->out->state == WG_RELAY_T_OPEN)
        ? pe->out : NULL;
    i = pe->in;

    if (o == NULL) {
        return i;
    }

    if (i == NULL) {
        return o;
    }

    return o->seq > i->seq ? o : i;
}


/* a frame for data (NULL, 0: a keepalive) into the buffer, or -1: full */

static int
wg_relay_tunnel_queue(wg_relay_t *r, wg_relay_tunnel_t *t,
    const uint8_t *data, size_t len)
{
    size_t  need;

    need = WG_RELAY_FRAME_HDR + len;

    if (len > WG_RELAY_DATAGRAM_MAX
        || t->out_len - t->out_pos + need > r->conf.buffer_max)
    {
        return -1;
    }

    if (t->out == NULL) {
        t->out = malloc(r->conf.buffer_max);
        if (t->out == NULL) {
            return -1;
        }
    }

    if (t->out_len + need > r->conf.buffer_max) {
        memmove(t->out, t->out + t->out_pos, t->out_len - t->out_pos);
        t->out_len -= t->out_pos;
        t->out_pos = 0;
    }

    wg_relay_frame_header(t->out + t->out_len, len);

    if (len != 0) {
        memcpy(t->out + t->out_len + WG_RELAY_FRAME_HDR, data, len);
    }

    t->out_len += need;

    return 0;
}


/* writes what may go: 0, or -1 when the tunnel was closed */

static int
wg_relay_tunnel_flush(wg_relay_t *r, wg_relay_tunnel_t *t, long long now)
{
    int            n;
    size_t         head;
    ssize_t        w;
    struct iovec   iov[2];
    struct msghdr  msg;

    for ( ;; ) {
        n = 0;
        head = t->head_len - t->head_pos;

        if (head != 0) {
            iov[n].iov_base = t->head + t->head_pos;
            iov[n].iov_len = head;
            n++;
        }

        if (t->state == WG_RELAY_T_OPEN && t->out_pos < t->out_len) {
            iov[n].iov_base = t->out + t->out_pos;
            iov[n].iov_len = t->out_len - t->out_pos;
            n++;
        }

        if (n == 0) {
            break;
        }

        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = n;

        /* MSG_NOSIGNAL: a peer gone is an error here, not a SIGPIPE */
        w = sendmsg(t->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (w == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }

            if (errno == EINTR) {
                continue;
            }

            if (t->peer != NULL) {
                wg_relay_set_error(t->peer, "write: %s", strerror(errno));
            }

            wg_relay_tunnel_close(r, t, 0, now);
            return -1;
        }

        if ((size_t) w >= head) {
            t->head_pos = t->head_len;
            t->out_pos += w - head;

            if (w > (ssize_t) head) {
                t->last_tx = now;
            }

        } else {
            t->head_pos += w;
        }

        if (t->out_pos == t->out_len) {
            t->out_pos = 0;
            t->out_len = 0;
        }
    }

    wg_relay_tunnel_events(r, t);

    return 0;
}


static void
wg_relay_tunnel_event(wg_relay_t *r, wg_relay_tunnel_t *t, uint32_t events,
    long long now)
{
    int        err, round;
    char       key[17];
    ssize_t    n;
    socklen_t  len;

    if (t->state == WG_RELAY_T_CONNECT) {
        err = 0;
        len = sizeof(err);

        if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
            err = errno;
        }

        if (err != 0) {
            wg_relay_short(key, t->peer->p.key);
            wg_relay_set_error(t->peer, "connect to \"%s:%u\": %s",
                               r->conf.mesh_host,
                               (unsigned) r->conf.mesh_port, strerror(err));
            wg_relay_log(r, "relay: peer \"%s\": %s", key,
                         t->peer->st.last_error);
            wg_relay_tunnel_close(r, t, 1, now);
            return;
        }

        t->state = WG_RELAY_T_REQUEST;

        (void) wg_relay_tunnel_flush(r, t, now);

        return;
    }

    if (events & EPOLLOUT) {
        if (wg_relay_tunnel_flush(r, t, now) != 0) {
            return;
        }
    }

    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))) {
        return;
    }

    for (round = 0; round < WG_RELAY_READS; round++) {

        if (t->in_len == WG_RELAY_INBUF) {
            /* cannot happen: a whole frame always fits and is consumed */
            wg_relay_tunnel_close(r, t, 1, now);
            return;
        }

        n = read(t->fd, t->in + t->in_len, WG_RELAY_INBUF - t->in_len);

        if (n == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }

            if (errno == EINTR) {
                continue;
            }
        }

        if (n <= 0) {
            if (t->peer != NULL) {
                wg_relay_set_error(t->peer, "%s tunnel %s",
                                   t->outbound ? "outbound" : "inbound",
                                   n == 0 ? "closed by the far side"
                                          : strerror(errno));

                if (t->state != WG_RELAY_T_OPEN) {
                    wg_relay_short(key, t->peer->p.key);
                    wg_relay_log(r, "relay: peer \"%s\": %s before the "
                                 "upgrade", key, t->peer->st.last_error);
                }
            }

            wg_relay_tunnel_close(r, t, 0, now);
            return;
        }

        t->in_len += n;

        switch (t->state) {

        case WG_RELAY_T_REQUEST:
            if (wg_relay_tunnel_response(r, t, now) != 0) {
                return;
            }

            break;

        case WG_RELAY_T_ACCEPT:
            if (wg_relay_tunnel_request(r, t, now) != 0) {
                return;
            }

            break;

        default:
            break;
        }

        if (t->state == WG_RELAY_T_OPEN) {
            t->last_rx = now;

            if (t->peer != NULL) {
                t->peer->st.last_rx = now;
            }

            if (wg_relay_tunnel_frames(r, t, now) != 0) {
                return;
            }
        }

        if ((size_t) n < WG_RELAY_INBUF / 4) {
            return;             /* drained, most likely */
        }
    }
}


/* the frames read on an upgraded tunnel go to the device */

static int
wg_relay_tunnel_frames(wg_relay_t *r, wg_relay_tunnel_t *t, long long now)
{
    int                   i, n, sent;
    size_t                pos, dlen;
    struct sockaddr_in    dev;
    wg_relay_peer_ent_t  *pe;

    pe = t->peer;
    pos = 0;
    n = 0;

    memset(&dev, 0, sizeof(dev));
    dev.sin_family = AF_INET;
    dev.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    dev.sin_port = htons(r->conf.device_port);

    for ( ;; ) {
        if (!wg_relay_frame_parse(t->in + pos, t->in_len - pos, &dlen)
            || n == WG_RELAY_BATCH)
        {
            /* send the batch, pointing into t->in, before moving it */

            if (n > 0) {
                sent = 0;

                if (r->conf.device_port != 0) {
                    sent = sendmmsg(pe->fd, r->msgs, n, MSG_DONTWAIT);
                    if (sent < 0) {
                        sent = 0;
                    }
                }

                for (i = 0; i < n; i++) {
                    if (i < sent) {
                        pe->st.rx_packets++;
                        pe->st.rx_bytes += r->iovs[i].iov_len;

                    } else {
                        pe->st.drops++;
                    }
                }

                n = 0;
            }

            if (!wg_relay_frame_parse(t->in + pos, t->in_len - pos, &dlen)) {
                break;
            }
        }

        if (dlen != 0) {
            if (!wg_relay_datagram_valid(t->in + pos + WG_RELAY_FRAME_HDR,
                                         dlen))
            {
                pe->st.drops++;

            } else {
                r->iovs[n].iov_base = t->in + pos + WG_RELAY_FRAME_HDR;
                r->iovs[n].iov_len = dlen;
                memset(&r->msgs[n].msg_hdr, 0, sizeof(struct msghdr));
                r->msgs[n].msg_hdr.msg_iov = &r->iovs[n];
                r->msgs[n].msg_hdr.msg_iovlen = 1;
                r->addrs[n] = dev;
                r->msgs[n].msg_hdr.msg_name = &r->addrs[n];
                r->msgs[n].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
                n++;
            }
        }

        pos += WG_RELAY_FRAME_HDR + dlen;
    }

    if (pos != 0) {
        memmove(t->in, t->in + pos, t->in_len - pos);
        t->in_len -= pos;
    }

    return 0;
}


/* outbound: the mesh's answer to our request */

static int
wg_relay_tunnel_response(wg_relay_t *r, wg_relay_tunnel_t *t, long long now)
{
    int                   status;
    long                  hlen, clen;
    size_t                blen;
    char                  text[96], key[17];
    wg_relay_peer_ent_t  *pe;

    pe = t->peer;
    wg_relay_short(key, pe->p.key);

    hlen = wg_relay_parse_response((char *) t->in, t->in_len, &status,
                                   &clen);
    if (hlen == 0) {
        return 0;
    }

    if (hlen < 0) {
        wg_relay_set_error(pe, "malformed response from the mesh");
        wg_relay_log(r, "relay: peer \"%s\": malformed response from "
                     "\"%s:%u\"", key, r->conf.mesh_host,
                     (unsigned) r->conf.mesh_port);
        wg_relay_tunnel_close(r, t, 1, now);
        return -1;
    }

    if (status != 101) {
        /* wait for a bounded body, for its error text */

        blen = t->in_len - hlen;

        if (clen > 0 && blen < (size_t) clen
            && t->in_len < WG_RELAY_HEADERS_MAX + 512)
        {
            return 0;
        }

        if (clen >= 0 && blen > (size_t) clen) {
            blen = clen;
        }

        wg_relay_error_text((char *) t->in + hlen, blen, text, sizeof(text));

        wg_relay_set_error(pe, "refused: %d \"%s\"", status, text);
        wg_relay_log(r, "relay: peer \"%s\": tunnel refused with %d: \"%s\"",
                     key, status, text);
        wg_relay_tunnel_close(r, t, 1, now);
        return -1;
    }

    t->in_len -= hlen;
    memmove(t->in, t->in + hlen, t->in_len);

    t->state = WG_RELAY_T_OPEN;
    t->opened = now;
    t->last_rx = now;
    t->last_tx = now;
    t->seq = ++r->seq;
    pe->backoff = 0;
    pe->retry = 0;

    wg_relay_log(r, "relay: peer \"%s\": outbound tunnel open", key);
    wg_relay_arm(r, now + r->conf.keepalive);

    /* what was queued while dialling */

    if (wg_relay_tunnel_flush(r, t, now) != 0) {
        return -1;
    }

    return 0;
}


/* inbound: the request nginx passed on */

static int
wg_relay_tunnel_request(wg_relay_t *r, wg_relay_tunnel_t *t, long long now)
{
    int                   status, n;
    long                  hlen;
    char                  from[17], to[17], body[256];
    const char           *why, *reason;
    wg_relay_request_t    rq;
    wg_relay_peer_ent_t  *pe;

    hlen = wg_relay_parse_request((char *) t->in, t->in_len, &rq);
    if (hlen == 0) {
        return 0;
    }

    pe = NULL;

    if (hlen < 0) {
        status = 400;
        why = "malformed request";

    } else {
        if (rq.has_from && !rq.bad) {
            pe = wg_relay_find(r, rq.from);
        }

        status = wg_relay_request_verdict(&rq, r->conf.self_key,
                                          pe != NULL ? pe->p.app : NULL,
                                          &why);
    }

    strcpy(from, "-");
    strcpy(to, "-");

    if (hlen > 0 && rq.has_from) {
        wg_relay_short(from, rq.from);
    }

    if (hlen > 0 && rq.has_to) {
        wg_relay_short(to, rq.to);
    }

    if (status != 101) {
        reason = status == 404 ? "Not Found"
                 : status == 403 ? "Forbidden" : "Bad Request";

        n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n", why);

        n = snprintf(t->head, sizeof(t->head),
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %d\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, reason, n, body);

        /* anyone with a dstack certificate reaches this: the log is
           bounded, not the refusals */

        if (now - r->refused_second >= 1000) {
            if (r->refused_quiet != 0) {
                wg_relay_log(r, "relay: %u more inbound tunnels refused, "
                             "not logged", r->refused_quiet);
            }

            r->refused_second = now;
            r->refused_logged = 0;
            r->refused_quiet = 0;
        }

        if (r->refused_logged < WG_RELAY_REFUSED_LOGS) {
            r->refused_logged++;
            wg_relay_log(r, "relay: refused inbound tunnel from \"%s\" to "
                         "\"%s\" (app \"%s\"): %d %s", from, to,
                         rq.has_app ? rq.app : "-", status, why);

        } else {
            r->refused_quiet++;
        }

        if (pe != NULL) {
            pe->st.drops++;
            wg_relay_set_error(pe, "inbound refused: %s", why);
        }

        /* a fresh Unix socket takes this at once; else the caller loses
           only the reason */
        if (send(t->fd, t->head, n, MSG_NOSIGNAL | MSG_DONTWAIT) == -1) {
            /* nothing to do */
        }

        wg_relay_tunnel_close(r, t, 0, now);
        return -1;
    }

    /* accepted: it replaces the peer's older inbound tunnel */

    r->pending--;

    if (pe->in != NULL) {
        wg_relay_set_error(pe, "replaced by a newer inbound tunnel");
        wg_relay_tunnel_close(r, pe->in, 0, now);
    }

    t->peer = pe;
    pe->in = t;
    t->state = WG_RELAY_T_OPEN;
    t->opened = now;
    t->last_rx = now;
    t->last_tx = now;
    t->seq = ++r->seq;

    t->head_len = snprintf(t->head, sizeof(t->head),
                           "HTTP/1.1 101 Switching Protocols\r\n"
                           "Upgrade: " WG_RELAY_PROTOCOL "\r\n"
                           "Connection: Upgrade\r\n\r\n");
    t->head_pos = 0;

    t->in_len -= hlen;
    memmove(t->in, t->in + hlen, t->in_len);

    wg_relay_log(r, "relay: peer \"%s\": inbound tunnel open", from);
    wg_relay_arm(r, now + r->conf.keepalive);

    if (wg_relay_tunnel_flush(r, t, now) != 0) {
        return -1;
    }

    return 0;
}


/* outbound: a non-blocking connect to the mesh, our request queued */

static int
wg_relay_dial(wg_relay_t *r, wg_relay_peer_ent_t *pe, long long now)
{
    int                  fd, rc, one;
    char                 from[65], to[65], key[17];
    struct sockaddr_in   sin;
    wg_relay_tunnel_t   *t;

    wg_relay_short(key, pe->p.key);

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(r->conf.mesh_port);

    if (inet_pton(AF_INET, r->conf.mesh_host, &sin.sin_addr) != 1) {
        wg_relay_set_error(pe, "mesh host \"%s\" is not an IPv4 address",
                           r->conf.mesh_host);
        wg_relay_peer_failed(r, pe, now);
        return -1;
    }

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        wg_relay_set_error(pe, "socket: %s", strerror(errno));
        wg_relay_peer_failed(r, pe, now);
        return -1;
    }

    one = 1;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    rc = connect(fd, (struct sockaddr *) &sin, sizeof(sin));

    if (rc == -1 && errno != EINPROGRESS) {
        wg_relay_set_error(pe, "connect to \"%s:%u\": %s",
                           r->conf.mesh_host, (unsigned) r->conf.mesh_port,
                           strerror(errno));
        wg_relay_log(r, "relay: peer \"%s\": %s", key, pe->st.last_error);
        close(fd);
        wg_relay_peer_failed(r, pe, now);
        return -1;
    }

    t = wg_relay_tunnel_new(r, fd, 1);
    if (t == NULL) {
        close(fd);
        wg_relay_set_error(pe, "out of memory");
        wg_relay_peer_failed(r, pe, now);
        return -1;
    }

    wg_key_to_hex(from, r->conf.self_key);
    wg_key_to_hex(to, pe->p.key);

    t->head_len = snprintf(t->head, sizeof(t->head),
        "GET " WG_RELAY_PATH " HTTP/1.1\r\n"
        "Host: %s:%u\r\n"
        "Connection: Upgrade\r\n"
        "Upgrade: " WG_RELAY_PROTOCOL "\r\n"
        "x-dstack-target-app: %s\r\n"
        "%s%s%s"
        "x-dstack-target-port: %u\r\n"
        WG_RELAY_HDR_FROM ": %s\r\n"
        WG_RELAY_HDR_TO ": %s\r\n\r\n",
        r->conf.mesh_host, (unsigned) r->conf.mesh_port, pe->p.app,
        pe->p.instance[0] ? "x-dstack-target-instance: " : "",
        pe->p.instance, pe->p.instance[0] ? "\r\n" : "",
        (unsigned) (r->conf.target_port ? r->conf.target_port : 443),
        from, to);

    t->peer = pe;
    t->state = WG_RELAY_T_CONNECT;
    t->deadline = now + WG_RELAY_DIAL_TIMEOUT;
    pe->out = t;

    /* connected or not yet: EPOLLOUT tells, and the request goes then */

    wg_relay_arm(r, t->deadline);

    return 0;
}


static void
wg_relay_accept(wg_relay_t *r, long long now)
{
    int                 fd, i;
    wg_relay_tunnel_t  *t;

    for (i = 0; i < 16; i++) {
        fd = accept4(r->listen_fd, NULL, NULL,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR
                && errno != ECONNABORTED)
            {
                wg_relay_log(r, "relay: accept() failed: %s",
                             strerror(errno));
            }

            return;
        }

        if (r->pending >= WG_RELAY_PENDING_MAX) {
            if (!r->pending_full_logged) {
                wg_relay_log(r, "relay: %u inbound connections awaiting "
                             "their request, closing new ones",
                             r->pending);
                r->pending_full_logged = 1;
            }

            close(fd);
            continue;
        }

        r->pending_full_logged = 0;

        t = wg_relay_tunnel_new(r, fd, 0);
        if (t == NULL) {
            close(fd);
            continue;
        }

        t->state = WG_RELAY_T_ACCEPT;
        t->deadline = now + WG_RELAY_ACCEPT_TIMEOUT;
        r->pending++;

        wg_relay_arm(r, t->deadline);
    }
}


/* helpers */

static long long
wg_relay_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static void
wg_relay_short(char *out, const uint8_t *key)
{
    char  hex[65];

    wg_key_to_hex(hex, key);
    memcpy(out, hex, 16);
    out[16] = '\0';
}


static void
wg_relay_log(wg_relay_t *r, const char *fmt, ...)
{
    char     buf[512];
    va_list  args;

    if (r->conf.log == NULL) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);

    r->conf.log("%s", buf);
}


static void
wg_relay_set_error(wg_relay_peer_ent_t *pe, const char *fmt, ...)
{
    va_list  args;

    if (pe == NULL) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(pe->st.last_error, sizeof(pe->st.last_error), fmt, args);
    va_end(args);
}
