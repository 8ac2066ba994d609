/*
 * wgctl: the device containers and the parsing and formatting of their
 * values.  The bottom of the device layer: it calls no backend.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "wgdev.h"


static int wg_grow(void **array, size_t *cap, size_t n, size_t size,
    size_t max);


wg_device_t *
wg_device_new(const char *name)
{
    wg_device_t  *dev;

    dev = calloc(1, sizeof(wg_device_t));
    if (dev == NULL) {
        return NULL;
    }

    if (name != NULL) {
        snprintf(dev->name, sizeof(dev->name), "%s", name);
    }

    return dev;
}


void
wg_device_free(wg_device_t *dev)
{
    size_t      i;
    wg_peer_t  *peer;

    if (dev == NULL) {
        return;
    }

    for (i = 0; i < dev->npeers; i++) {
        peer = &dev->peers[i];
        free(peer->allowedips);
        wg_memzero(peer, sizeof(wg_peer_t));
    }

    free(dev->peers);
    wg_memzero(dev, sizeof(wg_device_t));
    free(dev);
}


/*
 * Grows an array by doubling.  A fresh block and an explicit copy instead
 * of realloc(), so that no copy of key material is left in freed memory.
 */

static int
wg_grow(void **array, size_t *cap, size_t n, size_t size, size_t max)
{
    void    *p;
    size_t   ncap;

    if (n < *cap) {
        return 0;
    }

    if (n >= max) {
        return -E2BIG;
    }

    /* from 2: a peer's allowed IPs are one or two, 10k peers a device */
    ncap = *cap ? *cap * 2 : 2;
    if (ncap > max) {
        ncap = max;
    }

    p = calloc(ncap, size);
    if (p == NULL) {
        return -ENOMEM;
    }

    if (*array != NULL) {
        memcpy(p, *array, n * size);
        wg_memzero(*array, n * size);
        free(*array);
    }

    *array = p;
    *cap = ncap;

    return 0;
}


wg_peer_t *
wg_device_add_peer(wg_device_t *dev, const uint8_t *public_key)
{
    int         rc;
    wg_peer_t  *peer;

    rc = wg_grow((void **) &dev->peers, &dev->peers_cap, dev->npeers,
                 sizeof(wg_peer_t), WG_MAX_PEERS);
    if (rc != 0) {
        errno = -rc;
        return NULL;
    }

    peer = &dev->peers[dev->npeers++];
    memset(peer, 0, sizeof(wg_peer_t));

    if (public_key != NULL) {
        memcpy(peer->public_key, public_key, WG_KEY_SIZE);
    }

    return peer;
}


wg_peer_t *
wg_device_find_peer(const wg_device_t *dev, const uint8_t *public_key)
{
    size_t  i;

    for (i = 0; i < dev->npeers; i++) {
        if (memcmp(dev->peers[i].public_key, public_key, WG_KEY_SIZE) == 0) {
            return &dev->peers[i];
        }
    }

    return NULL;
}


int
wg_peer_add_allowedip(wg_peer_t *peer, const wg_allowedip_t *aip)
{
    int  rc;

    rc = wg_grow((void **) &peer->allowedips, &peer->allowedips_cap,
                 peer->nallowedips, sizeof(wg_allowedip_t),
                 WG_MAX_ALLOWEDIPS);
    if (rc != 0) {
        return rc;
    }

    peer->allowedips[peer->nallowedips++] = *aip;

    return 0;
}


void
wg_peer_clear_allowedips(wg_peer_t *peer)
{
    peer->nallowedips = 0;
}


int
wg_device_is_noop(const wg_device_t *dev)
{
    return dev->npeers == 0
           && (dev->flags & (WG_DEV_HAS_PRIVATE_KEY | WG_DEV_HAS_LISTEN_PORT
                             | WG_DEV_HAS_FWMARK | WG_DEV_REPLACE_PEERS))
              == 0;
}


int
wg_ifname_valid(const char *name)
{
    size_t  i, len;

    len = strlen(name);

    if (len == 0 || len >= IFNAMSIZ
        || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((name[i] >= 'a' && name[i] <= 'z')
              || (name[i] >= 'A' && name[i] <= 'Z')
              || (name[i] >= '0' && name[i] <= '9')
              || name[i] == '-' || name[i] == '_' || name[i] == '.'))
        {
            return 0;
        }
    }

    return 1;
}


int
wg_allowedip_parse(wg_allowedip_t *aip, const char *text)
{
    char           ip[INET6_ADDRSTRLEN + 1];
    size_t         len;
    unsigned long  cidr, max;
    const char    *slash, *p;

    memset(aip, 0, sizeof(wg_allowedip_t));

    slash = strchr(text, '/');
    len = slash ? (size_t) (slash - text) : strlen(text);

    if (len == 0 || len >= sizeof(ip)) {
        return -1;
    }

    memcpy(ip, text, len);
    ip[len] = '\0';

    if (strchr(ip, ':') != NULL) {
        if (inet_pton(AF_INET6, ip, &aip->addr.ip6) != 1) {
            return -1;
        }

        aip->family = AF_INET6;
        max = 128;

    } else {
        if (inet_pton(AF_INET, ip, &aip->addr.ip4) != 1) {
            return -1;
        }

        aip->family = AF_INET;
        max = 32;
    }

    if (slash == NULL) {
        aip->cidr = (uint8_t) max;
        return 0;
    }

    p = slash + 1;

    if (*p == '\0' || strlen(p) > 3) {
        return -1;
    }

    cidr = 0;

    for ( /* void */ ; *p; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        cidr = cidr * 10 + (unsigned long) (*p - '0');
    }

    if (cidr > max) {
        return -1;
    }

    aip->cidr = (uint8_t) cidr;
    wg_allowedip_normalize(aip);

    return 0;
}


/* clears host bits, as the kernel and wireguard-go store prefixes */

void
wg_allowedip_normalize(wg_allowedip_t *aip)
{
    size_t    i, bytes, bits;
    uint8_t  *p;

    p = (uint8_t *) &aip->addr;
    bytes = (aip->family == AF_INET6) ? 16 : 4;

    for (i = 0; i < bytes; i++) {
        bits = (size_t) aip->cidr > i * 8 ? aip->cidr - i * 8 : 0;

        if (bits >= 8) {
            continue;
        }

        p[i] &= (uint8_t) (0xff << (8 - bits));
    }
}


int
wg_allowedip_cmp(const wg_allowedip_t *a, const wg_allowedip_t *b)
{
    if (a->family != b->family) {
        return a->family < b->family ? -1 : 1;
    }

    if (a->cidr != b->cidr) {
        return a->cidr < b->cidr ? -1 : 1;
    }

    return memcmp(&a->addr, &b->addr,
                  a->family == AF_INET6 ? 16 : 4);
}


int
wg_allowedip_format(char *buf, size_t size, const wg_allowedip_t *aip)
{
    char  ip[INET6_ADDRSTRLEN];
    int   n;

    if (inet_ntop(aip->family, &aip->addr, ip, sizeof(ip)) == NULL) {
        return -1;
    }

    n = snprintf(buf, size, "%s/%u", ip, aip->cidr);

    return (n < 0 || (size_t) n >= size) ? -1 : 0;
}


int
wg_endpoint_parse(wg_endpoint_t *ep, const char *text)
{
    char           host[INET6_ADDRSTRLEN + 1];
    size_t         len;
    unsigned long  port;
    const char    *p, *end;

    memset(ep, 0, sizeof(wg_endpoint_t));

    if (text[0] == '[') {
        end = strchr(text, ']');
        if (end == NULL || end[1] != ':') {
            return -1;
        }

        p = text + 1;
        len = (size_t) (end - p);
        end++;

    } else {
        end = strrchr(text, ':');
        if (end == NULL) {
            return -1;
        }

        p = text;
        len = (size_t) (end - p);
    }

    if (len == 0 || len >= sizeof(host)) {
        return -1;
    }

    memcpy(host, p, len);
    host[len] = '\0';

    p = end + 1;

    if (*p == '\0' || strlen(p) > 5) {
        return -1;
    }

    port = 0;

    for ( /* void */ ; *p; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        port = port * 10 + (unsigned long) (*p - '0');
    }

    if (port == 0 || port > 65535) {
        return -1;
    }

    if (text[0] == '[') {
        if (inet_pton(AF_INET6, host, &ep->sin6.sin6_addr) != 1) {
            return -1;
        }

        ep->sin6.sin6_family = AF_INET6;
        ep->sin6.sin6_port = htons((uint16_t) port);

        return 0;
    }

    if (inet_pton(AF_INET, host, &ep->sin.sin_addr) != 1) {
        return -1;
    }

    ep->sin.sin_family = AF_INET;
    ep->sin.sin_port = htons((uint16_t) port);

    return 0;
}


int
wg_endpoint_equal(const wg_endpoint_t *a, const wg_endpoint_t *b)
{
    if (a->sa.sa_family != b->sa.sa_family) {
        return 0;
    }

    switch (a->sa.sa_family) {

    case AF_INET:
        return a->sin.sin_port == b->sin.sin_port
               && a->sin.sin_addr.s_addr == b->sin.sin_addr.s_addr;

    case AF_INET6:
        return a->sin6.sin6_port == b->sin6.sin6_port
               && a->sin6.sin6_scope_id == b->sin6.sin6_scope_id
               && memcmp(&a->sin6.sin6_addr, &b->sin6.sin6_addr, 16) == 0;

    default:
        return 1;
    }
}


int
wg_endpoint_format(char *buf, size_t size, const wg_endpoint_t *ep)
{
    int   n;
    char  ip[INET6_ADDRSTRLEN];

    switch (ep->sa.sa_family) {

    case AF_INET:
        if (inet_ntop(AF_INET, &ep->sin.sin_addr, ip, sizeof(ip)) == NULL) {
            return -1;
        }

        n = snprintf(buf, size, "%s:%u", ip, ntohs(ep->sin.sin_port));
        break;

    case AF_INET6:
        if (inet_ntop(AF_INET6, &ep->sin6.sin6_addr, ip, sizeof(ip)) == NULL)
        {
            return -1;
        }

        n = snprintf(buf, size, "[%s]:%u", ip, ntohs(ep->sin6.sin6_port));
        break;

    default:
        return -1;
    }

    return (n < 0 || (size_t) n >= size) ? -1 : 0;
}


const char *
wg_strerror(int err)
{
    if (err < 0) {
        err = -err;
    }

    if (err == EPROTONOSUPPORT) {
        return "WireGuard kernel module not loaded";
    }

    return strerror(err);
}
