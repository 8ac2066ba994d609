/*
 * wgctl: wg(8)-style configuration files: [Interface] PrivateKey,
 * ListenPort, FwMark; [Peer] PublicKey, PresharedKey, Endpoint (numeric),
 * AllowedIPs, PersistentKeepalive.  Strict and bounded; the text is parsed
 * in place and zeroed by wg_config_read() once parsed.
 */


#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "wgdev.h"


#define WG_CONFIG_MAX_SIZE   (64 << 20)
#define WG_CONFIG_MAX_LINE   65536
#define WG_CONFIG_MAX_QUOTE  64


typedef enum {
    WG_SECTION_NONE = 0,
    WG_SECTION_INTERFACE,
    WG_SECTION_PEER
} wg_section_e;


static void wg_config_error(char *err, size_t errlen, unsigned line,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static size_t wg_config_strip(char *line);
static int wg_config_number(const char *value, unsigned long max,
    unsigned long *out);
static int wg_config_allowedips(wg_peer_t *peer, char *value,
    char *err, size_t errlen, unsigned line);
static int wg_config_key_cmp(const void *a, const void *b);
static int wg_config_unique(const wg_device_t *dev);


static void
wg_config_error(char *err, size_t errlen, unsigned line, const char *fmt,
    ...)
{
    int      n;
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    n = snprintf(err, errlen, "line %u: ", line);
    if (n < 0 || (size_t) n >= errlen) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(err + n, errlen - (size_t) n, fmt, args);
    va_end(args);
}


/* drops the comment and every blank, as wg(8) does; returns the length */

static size_t
wg_config_strip(char *line)
{
    char    *r, *w;
    size_t   len;

    for (r = line, w = line; *r && *r != '#'; r++) {
        if (!isspace((unsigned char) *r)) {
            *w++ = *r;
        }
    }

    len = (size_t) (w - line);

    /* what was moved is cleared: it may be key text */
    while (w < r) {
        *w++ = '\0';
    }

    *r = '\0';

    return len;
}


static int
wg_config_number(const char *value, unsigned long max, unsigned long *out)
{
    char           *end;
    unsigned long   v;

    if (!isdigit((unsigned char) value[0]) || strlen(value) > 10) {
        return -1;
    }

    errno = 0;
    v = strtoul(value, &end, 10);

    if (errno != 0 || *end != '\0' || v > max) {
        return -1;
    }

    *out = v;

    return 0;
}


static int
wg_config_allowedips(wg_peer_t *peer, char *value, char *err, size_t errlen,
    unsigned line)
{
    int             rc;
    char           *item, *next;
    wg_allowedip_t  aip;

    if (value[0] == '\0') {
        return 0;
    }

    for (item = value; item != NULL; item = next) {
        next = strchr(item, ',');
        if (next != NULL) {
            *next++ = '\0';
        }

        if (wg_allowedip_parse(&aip, item) != 0) {
            wg_config_error(err, errlen, line,
                            "invalid AllowedIPs entry \"%.*s\"",
                            WG_CONFIG_MAX_QUOTE, item);
            return -EINVAL;
        }

        rc = wg_peer_add_allowedip(peer, &aip);
        if (rc != 0) {
            wg_config_error(err, errlen, line, "too many AllowedIPs");
            return rc;
        }
    }

    return 0;
}


static int
wg_config_key_cmp(const void *a, const void *b)
{
    return memcmp((*(const wg_peer_t * const *) a)->public_key,
                  (*(const wg_peer_t * const *) b)->public_key, WG_KEY_SIZE);
}


static int
wg_config_unique(const wg_device_t *dev)
{
    int                rc;
    size_t             i;
    const wg_peer_t  **sorted;

    if (dev->npeers < 2) {
        return 0;
    }

    sorted = calloc(dev->npeers, sizeof(wg_peer_t *));
    if (sorted == NULL) {
        return -ENOMEM;
    }

    for (i = 0; i < dev->npeers; i++) {
        sorted[i] = &dev->peers[i];
    }

    qsort(sorted, dev->npeers, sizeof(wg_peer_t *), wg_config_key_cmp);

    rc = 0;

    for (i = 1; i < dev->npeers; i++) {
        if (wg_config_key_cmp(&sorted[i - 1], &sorted[i]) == 0) {
            rc = -EEXIST;
            break;
        }
    }

    free(sorted);

    return rc;
}


int
wg_config_parse(wg_device_t *dev, char *text, size_t len, char *err,
    size_t errlen)
{
    int            rc;
    char          *line, *next, *end, *key, *value;
    size_t         n;
    unsigned       lineno, peer_line;
    wg_peer_t     *peer;
    wg_section_e   section;
    unsigned long  num;

    section = WG_SECTION_NONE;
    peer = NULL;
    peer_line = 0;
    lineno = 0;
    end = text + len;

    if (memchr(text, '\0', len) != NULL) {
        wg_config_error(err, errlen, 1, "NUL byte in configuration");
        return -EINVAL;
    }

    for (line = text; line < end; line = next) {
        lineno++;

        next = memchr(line, '\n', (size_t) (end - line));
        if (next == NULL) {
            next = end;

        } else {
            *next++ = '\0';
        }

        if (strlen(line) > WG_CONFIG_MAX_LINE) {
            wg_config_error(err, errlen, lineno, "line too long");
            return -EINVAL;
        }

        n = wg_config_strip(line);
        if (n == 0) {
            continue;
        }

        if (line[0] == '[') {
            if (peer != NULL && wg_key_is_zero(peer->public_key)) {
                wg_config_error(err, errlen, peer_line,
                                "[Peer] without PublicKey");
                return -EINVAL;
            }

            if (strcasecmp(line, "[Interface]") == 0) {
                section = WG_SECTION_INTERFACE;
                peer = NULL;

            } else if (strcasecmp(line, "[Peer]") == 0) {
                section = WG_SECTION_PEER;
                peer_line = lineno;

                peer = wg_device_add_peer(dev, NULL);
                if (peer == NULL) {
                    wg_config_error(err, errlen, lineno, "too many peers");
                    return -E2BIG;
                }

            } else {
                wg_config_error(err, errlen, lineno,
                                "unknown section \"%.*s\"",
                                WG_CONFIG_MAX_QUOTE, line);
                return -EINVAL;
            }

            continue;
        }

        value = strchr(line, '=');

        if (value == NULL || value == line) {
            wg_config_error(err, errlen, lineno,
                            "expected \"Key = Value\", got \"%.*s\"",
                            WG_CONFIG_MAX_QUOTE, line);
            return -EINVAL;
        }

        *value++ = '\0';
        key = line;

        if (section == WG_SECTION_INTERFACE
            && strcasecmp(key, "PrivateKey") == 0)
        {
            if (wg_key_from_base64(dev->private_key, value) != 0) {
                wg_config_error(err, errlen, lineno, "invalid PrivateKey");
                return -EINVAL;
            }

            dev->flags |= WG_DEV_HAS_PRIVATE_KEY;

        } else if (section == WG_SECTION_INTERFACE
                   && strcasecmp(key, "ListenPort") == 0)
        {
            if (wg_config_number(value, 65535, &num) != 0) {
                wg_config_error(err, errlen, lineno,
                                "invalid ListenPort \"%.*s\"",
                                WG_CONFIG_MAX_QUOTE, value);
                return -EINVAL;
            }

            dev->listen_port = (uint16_t) num;
            dev->flags |= WG_DEV_HAS_LISTEN_PORT;

        } else if (section == WG_SECTION_INTERFACE
                   && strcasecmp(key, "FwMark") == 0)
        {
            if (strcasecmp(value, "off") == 0) {
                num = 0;

            } else if (wg_config_number(value, 0xffffffffUL, &num) != 0) {
                wg_config_error(err, errlen, lineno,
                                "invalid FwMark \"%.*s\"",
                                WG_CONFIG_MAX_QUOTE, value);
                return -EINVAL;
            }

            dev->fwmark = (uint32_t) num;
            dev->flags |= WG_DEV_HAS_FWMARK;

        } else if (section == WG_SECTION_PEER
                   && strcasecmp(key, "PublicKey") == 0)
        {
            if (wg_key_from_base64(peer->public_key, value) != 0
                || wg_key_is_zero(peer->public_key))
            {
                wg_config_error(err, errlen, lineno,
                                "invalid PublicKey \"%.*s\"",
                                WG_CONFIG_MAX_QUOTE, value);
                return -EINVAL;
            }

        } else if (section == WG_SECTION_PEER
                   && strcasecmp(key, "PresharedKey") == 0)
        {
            if (wg_key_from_base64(peer->preshared_key, value) != 0) {
                wg_config_error(err, errlen, lineno,
                                "invalid PresharedKey");
                return -EINVAL;
            }

            peer->flags |= WG_PEER_HAS_PRESHARED_KEY;

        } else if (section == WG_SECTION_PEER
                   && strcasecmp(key, "Endpoint") == 0)
        {
            if (wg_endpoint_parse(&peer->endpoint, value) != 0) {
                wg_config_error(err, errlen, lineno,
                                "invalid Endpoint \"%.*s\" (expected a "
                                "numeric address and port)",
                                WG_CONFIG_MAX_QUOTE, value);
                return -EINVAL;
            }

        } else if (section == WG_SECTION_PEER
                   && strcasecmp(key, "AllowedIPs") == 0)
        {
            rc = wg_config_allowedips(peer, value, err, errlen, lineno);
            if (rc != 0) {
                return rc;
            }

        } else if (section == WG_SECTION_PEER
                   && strcasecmp(key, "PersistentKeepalive") == 0)
        {
            if (strcasecmp(value, "off") == 0) {
                num = 0;

            } else if (wg_config_number(value, 65535, &num) != 0) {
                wg_config_error(err, errlen, lineno,
                                "invalid PersistentKeepalive \"%.*s\"",
                                WG_CONFIG_MAX_QUOTE, value);
                return -EINVAL;
            }

            peer->keepalive = (uint16_t) num;
            peer->flags |= WG_PEER_HAS_KEEPALIVE;

        } else if (section == WG_SECTION_NONE) {
            wg_config_error(err, errlen, lineno,
                            "\"%.*s\" outside of a section",
                            WG_CONFIG_MAX_QUOTE, key);
            return -EINVAL;

        } else {
            wg_config_error(err, errlen, lineno, "unknown key \"%.*s\"",
                            WG_CONFIG_MAX_QUOTE, key);
            return -EINVAL;
        }
    }

    if (peer != NULL && wg_key_is_zero(peer->public_key)) {
        wg_config_error(err, errlen, peer_line, "[Peer] without PublicKey");
        return -EINVAL;
    }

    rc = wg_config_unique(dev);

    if (rc == -EEXIST) {
        wg_config_error(err, errlen, lineno, "a PublicKey appears twice");
        return -EINVAL;
    }

    return rc;
}


int
wg_config_read(wg_device_t *dev, const char *path, char *err, size_t errlen)
{
    int       fd, rc;
    char     *buf;
    size_t    len;
    ssize_t   n;

    fd = (strcmp(path, "-") == 0) ? dup(STDIN_FILENO)
                                  : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot open \"%s\": %s", path, strerror(-rc));
        return rc;
    }

    buf = malloc(WG_CONFIG_MAX_SIZE + 1);
    if (buf == NULL) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }

    len = 0;
    rc = 0;

    for ( ;; ) {
        n = read(fd, buf + len, WG_CONFIG_MAX_SIZE + 1 - len);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            rc = -errno;
            snprintf(err, errlen, "cannot read \"%s\": %s", path,
                     strerror(errno));
            break;
        }

        if (n == 0) {
            break;
        }

        len += (size_t) n;

        if (len > WG_CONFIG_MAX_SIZE) {
            rc = -EFBIG;
            snprintf(err, errlen, "\"%s\" is larger than %d bytes", path,
                     WG_CONFIG_MAX_SIZE);
            break;
        }
    }

    close(fd);

    if (rc == 0) {
        rc = wg_config_parse(dev, buf, len, err, errlen);
    }

    wg_memzero(buf, len);
    free(buf);

    return rc;
}
