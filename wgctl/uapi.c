/*
 * wgctl: the userspace backend, the cross-platform UAPI text protocol that
 * wireguard-go and boringtun serve on /var/run/wireguard/<if>.sock:
 * "get=1" or "set=1", key=value lines, a blank line; the answer ends with
 * "errno=N" and a blank line.
 */


#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

#include "uapi.h"


#define WG_UAPI_TIMEOUT      10             /* seconds per read or write */
#define WG_UAPI_MAX_ANSWER   (64 << 20)
#define WG_UAPI_MAX_LINE     512


typedef struct {
    char                    *data;
    size_t                   len;
    size_t                   cap;
    int                      failed;
} wg_buf_t;


static void wg_buf_printf(wg_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void wg_buf_release(wg_buf_t *b);
static int wg_uapi_write(int fd, const char *buf, size_t len);
static int wg_uapi_read(int fd, char **out, size_t *len);
static int wg_uapi_number(const char *value, uint64_t max, uint64_t *out);


static void
wg_buf_printf(wg_buf_t *b, const char *fmt, ...)
{
    int       n;
    char     *p;
    size_t    ncap;
    va_list   args;

    if (b->failed) {
        return;
    }

    for ( ;; ) {
        va_start(args, fmt);
        n = vsnprintf(b->data ? b->data + b->len : NULL,
                      b->data ? b->cap - b->len : 0, fmt, args);
        va_end(args);

        if (n < 0) {
            b->failed = 1;
            return;
        }

        if (b->data != NULL && b->len + (size_t) n < b->cap) {
            b->len += (size_t) n;
            return;
        }

        ncap = b->cap ? b->cap * 2 : 4096;
        while (ncap < b->len + (size_t) n + 1) {
            ncap *= 2;
        }

        p = malloc(ncap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }

        if (b->data != NULL) {
            memcpy(p, b->data, b->len);
            wg_memzero(b->data, b->cap);
            free(b->data);
        }

        b->data = p;
        b->cap = ncap;
    }
}


static void
wg_buf_release(wg_buf_t *b)
{
    if (b->data != NULL) {
        wg_memzero(b->data, b->cap);
        free(b->data);
    }

    memset(b, 0, sizeof(wg_buf_t));
}


int
wg_uapi_path(char *buf, size_t size, const char *ifname)
{
    int  n;

    if (!wg_ifname_valid(ifname)) {
        return -EINVAL;
    }

    n = snprintf(buf, size, "%s/%s.sock", WG_UAPI_DIR, ifname);

    return (n < 0 || (size_t) n >= size) ? -ENAMETOOLONG : 0;
}


int
wg_uapi_exists(const char *ifname)
{
    char         path[sizeof(WG_UAPI_DIR) + IFNAMSIZ + 8];
    struct stat  st;

    if (wg_uapi_path(path, sizeof(path), ifname) != 0) {
        return 0;
    }

    return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}


int
wg_uapi_connect(const char *ifname)
{
    int                 fd, rc;
    struct timeval      tv;
    struct sockaddr_un  sun;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;

    rc = wg_uapi_path(sun.sun_path, sizeof(sun.sun_path), ifname);
    if (rc != 0) {
        return rc;
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }

    tv.tv_sec = WG_UAPI_TIMEOUT;
    tv.tv_usec = 0;

    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0
        || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0
        || connect(fd, (struct sockaddr *) &sun, sizeof(sun)) != 0)
    {
        rc = -errno;
        close(fd);
        return rc;
    }

    return fd;
}


static int
wg_uapi_write(int fd, const char *buf, size_t len)
{
    ssize_t  n;

    while (len) {
        n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            return (errno == EAGAIN) ? -ETIMEDOUT : -errno;
        }

        buf += n;
        len -= (size_t) n;
    }

    return 0;
}


/* reads one answer: everything up to and including its blank line */

static int
wg_uapi_read(int fd, char **out, size_t *len)
{
    int       rc;
    char     *buf, *p;
    size_t    n, cap;
    ssize_t   r;

    cap = 65536;
    n = 0;

    buf = malloc(cap);
    if (buf == NULL) {
        return -ENOMEM;
    }

    for ( ;; ) {
        if (n + 1 == cap) {
            if (cap >= WG_UAPI_MAX_ANSWER) {
                rc = -EMSGSIZE;
                goto failed;
            }

            p = malloc(cap * 2);
            if (p == NULL) {
                rc = -ENOMEM;
                goto failed;
            }

            memcpy(p, buf, n);
            wg_memzero(buf, cap);
            free(buf);
            buf = p;
            cap *= 2;
        }

        r = read(fd, buf + n, cap - n - 1);

        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }

            rc = (errno == EAGAIN) ? -ETIMEDOUT : -errno;
            goto failed;
        }

        if (r == 0) {
            rc = -EPROTO;
            goto failed;
        }

        n += (size_t) r;

        if ((n == 1 && buf[0] == '\n')
            || (n >= 2 && buf[n - 1] == '\n' && buf[n - 2] == '\n'))
        {
            break;
        }
    }

    buf[n] = '\0';
    *out = buf;
    *len = n;

    return 0;

failed:

    wg_memzero(buf, cap);
    free(buf);

    return rc;
}


static int
wg_uapi_number(const char *value, uint64_t max, uint64_t *out)
{
    uint64_t     v;
    const char  *p;

    if (*value == '\0' || strlen(value) > 20) {
        return -1;
    }

    v = 0;

    for (p = value; *p; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        if (v > (UINT64_MAX - (uint64_t) (*p - '0')) / 10) {
            return -1;
        }

        v = v * 10 + (uint64_t) (*p - '0');
    }

    if (v > max) {
        return -1;
    }

    *out = v;

    return 0;
}


int
wg_uapi_build_set(const wg_device_t *dev, char **out, size_t *len)
{
    char              hex[WG_KEY_HEX_LEN + 1], text[INET6_ADDRSTRLEN + 8];
    size_t            i, j;
    wg_buf_t          b;
    const wg_peer_t  *peer;

    memset(&b, 0, sizeof(wg_buf_t));

    wg_buf_printf(&b, "set=1\n");

    if (dev->flags & WG_DEV_HAS_PRIVATE_KEY) {
        wg_key_to_hex(hex, dev->private_key);
        wg_buf_printf(&b, "private_key=%s\n", hex);
        wg_memzero(hex, sizeof(hex));
    }

    if (dev->flags & WG_DEV_HAS_LISTEN_PORT) {
        wg_buf_printf(&b, "listen_port=%u\n", dev->listen_port);
    }

    if (dev->flags & WG_DEV_HAS_FWMARK) {
        wg_buf_printf(&b, "fwmark=%u\n", dev->fwmark);
    }

    if (dev->flags & WG_DEV_REPLACE_PEERS) {
        wg_buf_printf(&b, "replace_peers=true\n");
    }

    for (i = 0; i < dev->npeers; i++) {
        peer = &dev->peers[i];

        wg_key_to_hex(hex, peer->public_key);
        wg_buf_printf(&b, "public_key=%s\n", hex);

        if (peer->flags & WG_PEER_REMOVE) {
            wg_buf_printf(&b, "remove=true\n");
            continue;
        }

        if (peer->flags & WG_PEER_HAS_PRESHARED_KEY) {
            wg_key_to_hex(hex, peer->preshared_key);
            wg_buf_printf(&b, "preshared_key=%s\n", hex);
            wg_memzero(hex, sizeof(hex));
        }

        if (peer->endpoint.sa.sa_family != AF_UNSPEC) {
            if (wg_endpoint_format(text, sizeof(text), &peer->endpoint) != 0)
            {
                wg_buf_release(&b);
                return -EINVAL;
            }

            wg_buf_printf(&b, "endpoint=%s\n", text);
        }

        if (peer->flags & WG_PEER_HAS_KEEPALIVE) {
            wg_buf_printf(&b, "persistent_keepalive_interval=%u\n",
                          peer->keepalive);
        }

        if (peer->flags & WG_PEER_REPLACE_ALLOWEDIPS) {
            wg_buf_printf(&b, "replace_allowed_ips=true\n");
        }

        for (j = 0; j < peer->nallowedips; j++) {
            if (wg_allowedip_format(text, sizeof(text),
                                    &peer->allowedips[j])
                != 0)
            {
                wg_buf_release(&b);
                return -EINVAL;
            }

            wg_buf_printf(&b, "allowed_ip=%s\n", text);
        }
    }

    wg_buf_printf(&b, "\n");

    if (b.failed) {
        wg_buf_release(&b);
        return -ENOMEM;
    }

    *out = b.data;
    *len = b.len;

    return 0;
}


/* parses a "get=1" answer in place; the text is zeroed by the caller */

int
wg_uapi_parse_get(wg_device_t *dev, char *text, size_t len)
{
    int              rc;
    char            *line, *next, *value, *end;
    uint64_t         num;
    wg_peer_t       *peer;
    wg_allowedip_t   aip;

    peer = NULL;
    rc = -EPROTO;
    end = text + len;

    for (line = text; line < end; line = next) {
        next = memchr(line, '\n', (size_t) (end - line));
        if (next == NULL) {
            return -EPROTO;
        }

        *next++ = '\0';

        if (line[0] == '\0') {
            return rc;
        }

        if (strlen(line) > WG_UAPI_MAX_LINE) {
            return -EPROTO;
        }

        value = strchr(line, '=');
        if (value == NULL) {
            return -EPROTO;
        }

        *value++ = '\0';

        if (strcmp(line, "errno") == 0) {
            if (wg_uapi_number(value, 0x7fffffff, &num) != 0) {
                return -EPROTO;
            }

            rc = -(int) num;

        } else if (peer == NULL && strcmp(line, "private_key") == 0) {
            if (wg_key_from_hex(dev->private_key, value) != 0) {
                return -EPROTO;
            }

            if (!wg_key_is_zero(dev->private_key)) {
                if (wg_key_public(dev->public_key, dev->private_key) != 0) {
                    return -EPROTO;
                }

                dev->flags |= WG_DEV_HAS_PRIVATE_KEY | WG_DEV_HAS_PUBLIC_KEY;
            }

        } else if (peer == NULL && strcmp(line, "listen_port") == 0) {
            if (wg_uapi_number(value, 0xffff, &num) != 0) {
                return -EPROTO;
            }

            dev->listen_port = (uint16_t) num;
            dev->flags |= WG_DEV_HAS_LISTEN_PORT;

        } else if (peer == NULL && strcmp(line, "fwmark") == 0) {
            if (wg_uapi_number(value, 0xffffffff, &num) != 0) {
                return -EPROTO;
            }

            dev->fwmark = (uint32_t) num;
            dev->flags |= WG_DEV_HAS_FWMARK;

        } else if (strcmp(line, "public_key") == 0) {
            peer = wg_device_add_peer(dev, NULL);
            if (peer == NULL) {
                return -errno;
            }

            if (wg_key_from_hex(peer->public_key, value) != 0) {
                return -EPROTO;
            }

        } else if (peer == NULL) {
            /* an unknown device-level key: newer implementations add some */
            continue;

        } else if (strcmp(line, "preshared_key") == 0) {
            if (wg_key_from_hex(peer->preshared_key, value) != 0) {
                return -EPROTO;
            }

            if (!wg_key_is_zero(peer->preshared_key)) {
                peer->flags |= WG_PEER_HAS_PRESHARED_KEY;
            }

        } else if (strcmp(line, "endpoint") == 0) {
            if (wg_endpoint_parse(&peer->endpoint, value) != 0) {
                return -EPROTO;
            }

        } else if (strcmp(line, "persistent_keepalive_interval") == 0) {
            if (wg_uapi_number(value, 0xffff, &num) != 0) {
                return -EPROTO;
            }

            peer->keepalive = (uint16_t) num;
            peer->flags |= WG_PEER_HAS_KEEPALIVE;

        } else if (strcmp(line, "allowed_ip") == 0) {
            if (wg_allowedip_parse(&aip, value) != 0) {
                return -EPROTO;
            }

            rc = wg_peer_add_allowedip(peer, &aip);
            if (rc != 0) {
                return rc;
            }

            rc = -EPROTO;

        } else if (strcmp(line, "last_handshake_time_sec") == 0) {
            if (wg_uapi_number(value, INT64_MAX, &num) != 0) {
                return -EPROTO;
            }

            peer->last_handshake.tv_sec = (time_t) num;

        } else if (strcmp(line, "last_handshake_time_nsec") == 0) {
            if (wg_uapi_number(value, 999999999, &num) != 0) {
                return -EPROTO;
            }

            peer->last_handshake.tv_nsec = (long) num;

        } else if (strcmp(line, "rx_bytes") == 0) {
            if (wg_uapi_number(value, UINT64_MAX, &num) != 0) {
                return -EPROTO;
            }

            peer->rx_bytes = num;

        } else if (strcmp(line, "tx_bytes") == 0) {
            if (wg_uapi_number(value, UINT64_MAX, &num) != 0) {
                return -EPROTO;
            }

            peer->tx_bytes = num;
        }
    }

    return -EPROTO;
}


int
wg_uapi_get(const char *ifname, wg_device_t **out)
{
    int           fd, rc;
    char         *answer;
    size_t        len;
    wg_device_t  *dev;

    *out = NULL;
    answer = NULL;
    len = 0;

    dev = wg_device_new(ifname);
    if (dev == NULL) {
        return -ENOMEM;
    }

    fd = wg_uapi_connect(ifname);
    if (fd < 0) {
        rc = fd;
        goto done;
    }

    rc = wg_uapi_write(fd, "get=1\n\n", 7);

    if (rc == 0) {
        rc = wg_uapi_read(fd, &answer, &len);
    }

    close(fd);

    if (rc == 0) {
        rc = wg_uapi_parse_get(dev, answer, len);
    }

done:

    if (answer != NULL) {
        wg_memzero(answer, len);
        free(answer);
    }

    if (rc != 0) {
        wg_device_free(dev);
        return rc;
    }

    *out = dev;

    return 0;
}


int
wg_uapi_set(const wg_device_t *dev, wg_io_stats_t *io)
{
    int        fd, rc;
    char      *req, *answer, *line;
    size_t     reqlen, len;
    uint64_t   num;

    answer = NULL;
    len = 0;

    rc = wg_uapi_build_set(dev, &req, &reqlen);
    if (rc != 0) {
        return rc;
    }

    fd = wg_uapi_connect(dev->name);
    if (fd < 0) {
        rc = fd;
        goto done;
    }

    rc = wg_uapi_write(fd, req, reqlen);

    if (rc == 0) {
        if (io != NULL) {
            io->requests++;
            io->bytes += reqlen;
        }

        rc = wg_uapi_read(fd, &answer, &len);
    }

    close(fd);

    if (rc != 0) {
        goto done;
    }

    line = answer;

    if (strncmp(line, "errno=", 6) != 0
        || strchr(line, '\n') == NULL)
    {
        rc = -EPROTO;
        goto done;
    }

    *strchr(line, '\n') = '\0';

    if (wg_uapi_number(line + 6, 0x7fffffff, &num) != 0) {
        rc = -EPROTO;
        goto done;
    }

    rc = -(int) num;

done:

    wg_memzero(req, reqlen);
    free(req);
    free(answer);

    return rc;
}
