/*
 * A small HTTP/1.1 server on a Unix socket for dstack-sim: one thread,
 * poll(), keep-alive and pipelining, Content-Length and chunked bodies.
 * Every input is bounded and every wait has a timeout; a bad request
 * gets a JSON error and the connection is closed after a lingering read.
 */

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sim.h"


#define SIM_HEADER_MAX     8192
#define SIM_HEADER_LINES   100
#define SIM_BODY_MAX       65536
#define SIM_IN_MAX         (SIM_HEADER_MAX + SIM_BODY_MAX + 4096)
#define SIM_CONN_MAX       256
#define SIM_TIMEOUT        10000
#define SIM_LINGER         2000
#define SIM_LINGER_MAX     (1024 * 1024)

#define SIM_OK             0
#define SIM_AGAIN          1
#define SIM_ERROR          -1


typedef struct {
    int                 fd;
    char               *in;
    size_t              in_len;
    size_t              in_size;
    char               *out;
    size_t              out_len;
    size_t              out_pos;
    size_t              discarded;
    int64_t             deadline;
    unsigned            close:1;
    unsigned            lingering:1;
    unsigned            continued:1;
    unsigned            dead:1;
} sim_conn_t;


typedef struct {
    sim_request_t       r;
    size_t              consumed;
    int                 status;
    const char         *error;
    unsigned            keep_alive:1;
    unsigned            expect:1;
} sim_http_msg_t;


static void sim_conn_read(sim_conn_t *c, int64_t now);
static void sim_conn_write(sim_conn_t *c, int64_t now);
static void sim_conn_process(sim_conn_t *c, sim_handler_pt handler,
    void *data);
static int sim_conn_queue(sim_conn_t *c, int status, const char *allow,
    const char *body, size_t len, int keep_alive);
static void sim_conn_error(sim_conn_t *c, int status, const char *error);
static void sim_conn_free(sim_conn_t *c);
static int sim_http_parse(sim_conn_t *c, sim_http_msg_t *m);
static int sim_http_header(sim_http_msg_t *m, char *name, size_t nlen,
    char *value, size_t vlen, long *clen, int *chunked);
static int sim_http_chunked(char *p, size_t n, int decode, size_t *len,
    size_t *consumed);
static int sim_http_token(const char *v, size_t len, const char *token);
static const char *sim_http_reason(int status);
static int64_t sim_now(void);


int
sim_http_listen(const char *path)
{
    int                 fd, probe;
    struct stat         st;
    struct sockaddr_un  sa;

    memset(&sa, 0, sizeof(struct sockaddr_un));
    sa.sun_family = AF_UNIX;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        sim_log("socket path too long: \"%s\"", path);
        return -1;
    }

    strcpy(sa.sun_path, path);

    /* a socket left by a dead simulator is replaced, a live one is not */

    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe != -1
            && connect(probe, (struct sockaddr *) &sa, sizeof(sa)) == 0)
        {
            close(probe);
            sim_log("socket \"%s\" is in use", path);
            return -1;
        }

        if (probe != -1) {
            close(probe);
        }

        unlink(path);
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        sim_log("socket() failed: %s", strerror(errno));
        return -1;
    }

    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == -1
        || listen(fd, 128) == -1)
    {
        sim_log("cannot listen on \"%s\": %s", path, strerror(errno));
        close(fd);
        return -1;
    }

    return fd;
}


int
sim_http_run(int lfd, sim_handler_pt handler, void *data,
    volatile sig_atomic_t *stop)
{
    int            fd, rc, timeout, accepting;
    size_t         i, n, nconns;
    int64_t        now;
    sim_conn_t    *c, conns[SIM_CONN_MAX];
    struct pollfd  pfd[SIM_CONN_MAX + 1];

    nconns = 0;

    while (!*stop) {
        now = sim_now();
        timeout = 1000;

        for (i = 0; i < nconns; i++) {
            c = &conns[i];
            pfd[i].fd = c->fd;
            pfd[i].events = c->out_pos < c->out_len ? POLLOUT : POLLIN;
            pfd[i].revents = 0;

            if (c->deadline - now < timeout) {
                timeout = c->deadline > now ? (int) (c->deadline - now) : 0;
            }
        }

        pfd[nconns].fd = lfd;
        pfd[nconns].events = nconns < SIM_CONN_MAX ? POLLIN : 0;
        pfd[nconns].revents = 0;

        rc = poll(pfd, nconns + 1, timeout);
        if (rc == -1) {
            if (errno == EINTR) {
                continue;
            }

            sim_log("poll() failed: %s", strerror(errno));
            break;
        }

        now = sim_now();
        accepting = pfd[nconns].revents & POLLIN;

        for (i = 0; i < nconns; i++) {
            c = &conns[i];

            if (pfd[i].revents & (POLLERR | POLLNVAL)) {
                c->dead = 1;

            } else if (pfd[i].revents & POLLOUT) {
                sim_conn_write(c, now);

                if (!c->dead && c->out_pos == c->out_len) {
                    sim_conn_process(c, handler, data);
                }

            } else if (pfd[i].revents & (POLLIN | POLLHUP)) {
                sim_conn_read(c, now);

                if (!c->dead) {
                    sim_conn_process(c, handler, data);
                }

            } else if (now >= c->deadline) {
                c->dead = 1;
            }
        }

        for (i = 0, n = 0; i < nconns; i++) {
            if (conns[i].dead) {
                sim_conn_free(&conns[i]);

            } else {
                conns[n++] = conns[i];
            }
        }

        nconns = n;

        while (accepting && nconns < SIM_CONN_MAX) {
            fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd == -1) {
                if (errno != EAGAIN && errno != EINTR
                    && errno != ECONNABORTED)
                {
                    sim_log("accept() failed: %s", strerror(errno));
                }

                break;
            }

            c = &conns[nconns++];
            memset(c, 0, sizeof(sim_conn_t));
            c->fd = fd;
            c->deadline = now + SIM_TIMEOUT;
        }
    }

    for (i = 0; i < nconns; i++) {
        sim_conn_free(&conns[i]);
    }

    return *stop ? 0 : -1;
}


static void
sim_conn_read(sim_conn_t *c, int64_t now)
{
    char     *p, buf[4096];
    size_t    size;
    ssize_t   n;

    if (c->lingering) {
        n = read(c->fd, buf, sizeof(buf));
        if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
            c->dead = 1;

        } else if (n > 0) {
            c->discarded += n;
            c->dead = c->discarded > SIM_LINGER_MAX;
        }

        return;
    }

    if (c->in_len == c->in_size) {
        if (c->in_size == SIM_IN_MAX) {
            /* sim_conn_process() answers a full buffer with an error */
            return;
        }

        size = c->in_size ? 2 * c->in_size : 4096;
        size = size < SIM_IN_MAX ? size : SIM_IN_MAX;

        p = realloc(c->in, size);
        if (p == NULL) {
            c->dead = 1;
            return;
        }

        c->in = p;
        c->in_size = size;
    }

    n = read(c->fd, c->in + c->in_len, c->in_size - c->in_len);

    if (n > 0) {
        c->in_len += n;
        c->deadline = now + SIM_TIMEOUT;

    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        c->dead = 1;
    }
}


static void
sim_conn_write(sim_conn_t *c, int64_t now)
{
    ssize_t  n;

    while (c->out_pos < c->out_len) {
        n = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos,
                 MSG_NOSIGNAL);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }

            if (errno != EAGAIN) {
                c->dead = 1;
            }

            return;
        }

        c->out_pos += n;
        c->deadline = now + SIM_TIMEOUT;
    }

    /* the output may hold a private key: clear it as soon as it is sent */

    explicit_bzero(c->out, c->out_len);
    free(c->out);
    c->out = NULL;
    c->out_len = 0;
    c->out_pos = 0;

    if (c->close && !c->lingering) {
        /* read what the client still sends so that it sees our answer */
        shutdown(c->fd, SHUT_WR);
        c->lingering = 1;
        c->deadline = now + SIM_LINGER;
    }
}


static void
sim_conn_process(sim_conn_t *c, sim_handler_pt handler, void *data)
{
    int             rc;
    sim_response_t  resp;
    sim_http_msg_t  m;

    while (c->out_len == 0 && !c->close && c->in_len > 0) {

        memset(&m, 0, sizeof(sim_http_msg_t));

        rc = sim_http_parse(c, &m);

        if (rc == SIM_AGAIN) {
            if (c->in_len == SIM_IN_MAX) {
                sim_conn_error(c, 413, "request body too large");

            } else if (m.expect && !c->continued) {
                c->continued = 1;
                c->out = strdup("HTTP/1.1 100 Continue\r\n\r\n");
                c->out_len = c->out != NULL ? strlen(c->out) : 0;
            }

            return;
        }

        if (rc == SIM_ERROR) {
            sim_conn_error(c, m.status, m.error);
            return;
        }

        memset(&resp, 0, sizeof(sim_response_t));

        handler(&m.r, &resp, data);

        if (resp.body == NULL) {
            sim_conn_error(c, 500, "internal error");
            return;
        }

        sim_log("%s %.200s %d", m.r.method, m.r.path, resp.status);

        rc = sim_conn_queue(c, resp.status, resp.allow, resp.body, resp.len,
                            m.keep_alive);

        explicit_bzero(resp.body, resp.len);
        free(resp.body);

        if (rc != 0) {
            c->dead = 1;
            return;
        }

        c->close = !m.keep_alive;
        c->continued = 0;
        c->in_len -= m.consumed;
        memmove(c->in, c->in + m.consumed, c->in_len);
    }
}


static int
sim_conn_queue(sim_conn_t *c, int status, const char *allow,
    const char *body, size_t len, int keep_alive)
{
    int   n;
    char  head[256];

    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %zu\r\n"
                 "%s%s%s"
                 "Connection: %s\r\n\r\n",
                 status, sim_http_reason(status), len,
                 allow != NULL ? "Allow: " : "",
                 allow != NULL ? allow : "",
                 allow != NULL ? "\r\n" : "",
                 keep_alive ? "keep-alive" : "close");

    c->out = malloc(n + len);
    if (c->out == NULL) {
        return -1;
    }

    memcpy(c->out, head, n);
    memcpy(c->out + n, body, len);
    c->out_len = n + len;
    c->out_pos = 0;

    return 0;
}


/* "error" is one of our constant strings, safe inside JSON quotes */

static void
sim_conn_error(sim_conn_t *c, int status, const char *error)
{
    int   n;
    char  body[256];

    n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", error);

    sim_log("bad request: %d %s", status, error);

    c->close = 1;

    if (sim_conn_queue(c, status, NULL, body, n, 0) != 0) {
        c->dead = 1;
    }
}


static void
sim_conn_free(sim_conn_t *c)
{
    close(c->fd);
    free(c->in);

    if (c->out != NULL) {
        explicit_bzero(c->out, c->out_len);
        free(c->out);
    }
}


/*
 * Parses the request at the start of c->in.  Until the whole message is
 * there the buffer is left untouched (SIM_AGAIN), so the next call starts
 * afresh; a complete message gets its strings terminated in place and a
 * chunked body decoded in place.
 */

static int
sim_http_parse(sim_conn_t *c, sim_http_msg_t *m)
{
    int      chunked;
    char    *p, *end, *line, *eol, *colon, *sp1, *sp2, *q, *v;
    long     clen;
    size_t   hlen, len, lines, consumed;

    p = c->in;
    end = NULL;

    for (q = p; q < p + c->in_len && q < p + SIM_HEADER_MAX; q++) {
        if (*q == '\n'
            && ((q + 1 < p + c->in_len && q[1] == '\n')
                || (q + 2 < p + c->in_len && q[1] == '\r' && q[2] == '\n')))
        {
            end = q + (q[1] == '\n' ? 2 : 3);
            break;
        }
    }

    if (end == NULL) {
        if (c->in_len >= SIM_HEADER_MAX) {
            m->status = 431;
            m->error = "request header too large";
            return SIM_ERROR;
        }

        return SIM_AGAIN;
    }

    hlen = end - p;
    m->status = 400;
    m->error = "bad request line";

    /* the request line: METHOD SP /target SP HTTP/1.x */

    eol = memchr(p, '\n', hlen);
    sp1 = memchr(p, ' ', eol - p);
    sp2 = sp1 != NULL ? memchr(sp1 + 1, ' ', eol - sp1 - 1) : NULL;

    if (sp1 == NULL || sp2 == NULL || sp1 == p || sp1 - p > 16
        || sp1[1] != '/')
    {
        return SIM_ERROR;
    }

    for (q = p; q < sp1; q++) {
        if (*q < 'A' || *q > 'Z') {
            return SIM_ERROR;
        }
    }

    for (q = sp1 + 1; q < sp2; q++) {
        if ((u_char) *q <= 0x20 || (u_char) *q >= 0x7f) {
            return SIM_ERROR;
        }
    }

    len = eol - sp2 - 1 - (eol[-1] == '\r');

    if (len != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        return SIM_ERROR;
    }

    if (sp2[8] == '1') {
        m->keep_alive = 1;

    } else if (sp2[8] != '0') {
        m->status = 505;
        m->error = "HTTP version not supported";
        return SIM_ERROR;
    }

    /* header fields */

    clen = -1;
    chunked = 0;
    lines = 0;

    for (line = eol + 1; line < end; line = eol + 1) {
        eol = memchr(line, '\n', end - line);
        len = eol - line - (eol > line && eol[-1] == '\r');

        if (len == 0) {
            break;
        }

        if (++lines > SIM_HEADER_LINES) {
            m->status = 431;
            m->error = "too many header fields";
            return SIM_ERROR;
        }

        m->error = "bad header field";

        colon = memchr(line, ':', len);
        if (colon == NULL || colon == line) {
            return SIM_ERROR;
        }

        for (q = line; q < colon; q++) {
            if (!isalnum((u_char) *q)
                && strchr("!#$%&'*+-.^_`|~", *q) == NULL)
            {
                return SIM_ERROR;
            }
        }

        v = colon + 1;
        q = line + len;

        while (v < q && (*v == ' ' || *v == '\t')) {
            v++;
        }

        while (q > v && (q[-1] == ' ' || q[-1] == '\t')) {
            q--;
        }

        if (sim_http_header(m, line, colon - line, v, q - v, &clen, &chunked)
            != SIM_OK)
        {
            return SIM_ERROR;
        }
    }

    /* the body */

    if (chunked) {
        switch (sim_http_chunked(end, c->in_len - hlen, 0, &len, &consumed)) {

        case SIM_AGAIN:
            return SIM_AGAIN;

        case SIM_ERROR:
            m->error = "bad chunked body";
            return SIM_ERROR;

        case SIM_OK:
            break;

        default:
            m->status = 413;
            m->error = "request body too large";
            return SIM_ERROR;
        }

        sim_http_chunked(end, c->in_len - hlen, 1, &len, &consumed);

    } else {
        len = clen > 0 ? (size_t) clen : 0;
        consumed = len;

        if (c->in_len - hlen < len) {
            return SIM_AGAIN;
        }
    }

    /* complete: terminate the strings in place */

    *sp1 = '\0';
    *sp2 = '\0';

    m->r.method = p;
    m->r.path = sp1 + 1;
    m->r.query = NULL;

    q = strchr(sp1 + 1, '?');
    if (q != NULL) {
        *q = '\0';
        m->r.query = q + 1;
    }

    m->r.body = end;
    m->r.body_len = len;
    m->consumed = hlen + consumed;
    m->status = 0;
    m->error = NULL;

    return SIM_OK;
}


static int
sim_http_header(sim_http_msg_t *m, char *name, size_t nlen, char *value,
    size_t vlen, long *clen, int *chunked)
{
    long    n;
    size_t  i;

#define sim_http_is(s)                                                       \
    (nlen == sizeof(s) - 1 && strncasecmp(name, s, nlen) == 0)

    if (sim_http_is("content-length")) {
        if (vlen == 0) {
            m->error = "bad content-length";
            return SIM_ERROR;
        }

        for (n = 0, i = 0; i < vlen; i++) {
            if (!isdigit((u_char) value[i])) {
                m->error = "bad content-length";
                return SIM_ERROR;
            }

            /* saturate: anything this large is refused below anyway */
            n = n > SIM_BODY_MAX ? n : n * 10 + (value[i] - '0');
        }

        if (*clen != -1 && *clen != n) {
            m->error = "conflicting content-length";
            return SIM_ERROR;
        }

        if (n > SIM_BODY_MAX) {
            m->status = 413;
            m->error = "request body too large";
            return SIM_ERROR;
        }

        *clen = n;

    } else if (sim_http_is("transfer-encoding")) {
        if (!sim_http_token(value, vlen, "chunked")) {
            m->status = 501;
            m->error = "unsupported transfer-encoding";
            return SIM_ERROR;
        }

        *chunked = 1;

    } else if (sim_http_is("connection")) {
        if (sim_http_token(value, vlen, "close")) {
            m->keep_alive = 0;

        } else if (sim_http_token(value, vlen, "keep-alive")) {
            m->keep_alive = 1;
        }

    } else if (sim_http_is("expect")) {
        m->expect = sim_http_token(value, vlen, "100-continue");
    }

#undef sim_http_is

    if (*chunked && *clen != -1) {
        m->error = "both content-length and transfer-encoding";
        return SIM_ERROR;
    }

    return SIM_OK;
}


/*
 * A chunked body at "p": SIM_OK with the decoded length and the bytes
 * taken, SIM_AGAIN, SIM_ERROR, or 2 when it exceeds SIM_BODY_MAX.  With
 * "decode" the data are moved to the start of "p"; they only ever move
 * backwards, over bytes already read.
 */

static int
sim_http_chunked(char *p, size_t n, int decode, size_t *len,
    size_t *consumed)
{
    size_t  i, out, size, digits, start;

    i = 0;
    out = 0;

    for ( ;; ) {
        size = 0;

        for (digits = 0; i < n && isxdigit((u_char) p[i]); digits++, i++) {
            if (digits == 8) {
                return SIM_ERROR;
            }

            size = size * 16
                   + (isdigit((u_char) p[i]) ? p[i] - '0'
                                             : (p[i] | 0x20) - 'a' + 10);
        }

        if (i == n) {
            return SIM_AGAIN;
        }

        if (digits == 0) {
            return SIM_ERROR;
        }

        /* chunk extensions are ignored */

        while (i < n && p[i] != '\n') {
            if ((u_char) p[i] < 0x20 && p[i] != '\r' && p[i] != '\t') {
                return SIM_ERROR;
            }

            i++;
        }

        if (i == n) {
            return SIM_AGAIN;
        }

        i++;

        if (size == 0) {
            break;
        }

        if (out + size > SIM_BODY_MAX) {
            return 2;
        }

        if (n - i < size + 1) {
            return SIM_AGAIN;
        }

        if (decode) {
            memmove(p + out, p + i, size);
        }

        out += size;
        i += size;

        if (p[i] == '\r') {
            if (++i == n) {
                return SIM_AGAIN;
            }
        }

        if (p[i++] != '\n') {
            return SIM_ERROR;
        }
    }

    /* trailer fields up to an empty line, ignored */

    for ( ;; ) {
        start = i;

        while (i < n && p[i] != '\n') {
            i++;
        }

        if (i == n) {
            return SIM_AGAIN;
        }

        i++;

        if (i - start == 1 || (i - start == 2 && p[start] == '\r')) {
            break;
        }
    }

    *len = out;
    *consumed = i;

    return SIM_OK;
}


/* whether the comma-separated list "v" holds "token", case-insensitive */

static int
sim_http_token(const char *v, size_t len, const char *token)
{
    size_t       i, j, tlen;
    const char  *end;

    tlen = strlen(token);
    end = v + len;

    while (v < end) {
        for (i = 0; v + i < end && v[i] != ','; i++) { /* void */ }

        for (j = i; j > 0 && (v[j - 1] == ' ' || v[j - 1] == '\t'); j--) {
            /* void */
        }

        if (j == tlen && strncasecmp(v, token, tlen) == 0) {
            return 1;
        }

        v += i;

        while (v < end && (*v == ',' || *v == ' ' || *v == '\t')) {
            v++;
        }
    }

    return 0;
}


static const char *
sim_http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}


static int64_t
sim_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
