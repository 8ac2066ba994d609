/*
 * wgctl: the difference between a device's actual and desired state, as
 * a change set that a backend applies: removed peers, new peers, and for
 * peers on both sides only the fields that differ.  Like "wg syncconf",
 * but finer: a peer whose allowed IPs are unchanged is not sent at all,
 * and nothing is flushed and rebuilt.  Pure functions over the structs.
 */


#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wgdev.h"


static int wg_peer_key_cmp(const void *a, const void *b);
static int wg_aip_cmp(const void *a, const void *b);
static const wg_peer_t **wg_sorted_peers(const wg_device_t *dev);
static wg_allowedip_t *wg_sorted_allowedips(const wg_peer_t *peer,
    size_t *n);
static int wg_allowedips_differ(const wg_peer_t *a, const wg_peer_t *b,
    int *differ);
static int wg_diff_peer(wg_device_t *changes, const wg_peer_t *actual,
    const wg_peer_t *desired, int *changed);
static size_t wg_apply_find(const wg_device_t *dev, const size_t *index,
    size_t n, const uint8_t *key);


static int
wg_peer_key_cmp(const void *a, const void *b)
{
    const wg_peer_t  *pa, *pb;

    pa = *(const wg_peer_t * const *) a;
    pb = *(const wg_peer_t * const *) b;

    return memcmp(pa->public_key, pb->public_key, WG_KEY_SIZE);
}


static int
wg_aip_cmp(const void *a, const void *b)
{
    return wg_allowedip_cmp(a, b);
}


static const wg_peer_t **
wg_sorted_peers(const wg_device_t *dev)
{
    size_t             i;
    const wg_peer_t  **sorted;

    sorted = calloc(dev->npeers + 1, sizeof(wg_peer_t *));
    if (sorted == NULL) {
        return NULL;
    }

    for (i = 0; i < dev->npeers; i++) {
        sorted[i] = &dev->peers[i];
    }

    qsort(sorted, dev->npeers, sizeof(wg_peer_t *), wg_peer_key_cmp);

    return sorted;
}


/* a sorted copy without duplicates: allowed IPs compare as sets */

static wg_allowedip_t *
wg_sorted_allowedips(const wg_peer_t *peer, size_t *n)
{
    size_t           i, j;
    wg_allowedip_t  *a;

    a = calloc(peer->nallowedips + 1, sizeof(wg_allowedip_t));
    if (a == NULL) {
        return NULL;
    }

    for (i = 0; i < peer->nallowedips; i++) {
        a[i] = peer->allowedips[i];
        wg_allowedip_normalize(&a[i]);
    }

    qsort(a, peer->nallowedips, sizeof(wg_allowedip_t), wg_aip_cmp);

    j = 0;

    for (i = 0; i < peer->nallowedips; i++) {
        if (j == 0 || wg_allowedip_cmp(&a[j - 1], &a[i]) != 0) {
            a[j++] = a[i];
        }
    }

    *n = j;

    return a;
}


static int
wg_allowedips_differ(const wg_peer_t *a, const wg_peer_t *b, int *differ)
{
    size_t           i, na, nb;
    wg_allowedip_t  *sa, *sb;

    sa = wg_sorted_allowedips(a, &na);
    sb = wg_sorted_allowedips(b, &nb);

    if (sa == NULL || sb == NULL) {
        free(sa);
        free(sb);
        return -ENOMEM;
    }

    *differ = (na != nb);

    for (i = 0; !*differ && i < na; i++) {
        *differ = (wg_allowedip_cmp(&sa[i], &sb[i]) != 0);
    }

    free(sa);
    free(sb);

    return 0;
}


/*
 * Adds to the change set what turns actual into desired; actual NULL means
 * a new peer.  A desired peer without an endpoint keeps the endpoint the
 * device has (it may have been learned by roaming); a desired peer without
 * a keepalive or preshared key wants none.
 */

static int
wg_diff_peer(wg_device_t *changes, const wg_peer_t *actual,
    const wg_peer_t *desired, int *changed)
{
    int             rc, aips, endpoint;
    size_t          i;
    uint8_t         zero[WG_KEY_SIZE];
    uint16_t        want, have;
    uint32_t        flags;
    wg_peer_t      *peer;
    const uint8_t  *psk_want, *psk_have;

    memset(zero, 0, sizeof(zero));
    flags = 0;
    aips = 1;

    want = (desired->flags & WG_PEER_HAS_KEEPALIVE) ? desired->keepalive : 0;

    psk_want = (desired->flags & WG_PEER_HAS_PRESHARED_KEY)
               ? desired->preshared_key : zero;

    if (actual == NULL) {
        flags |= WG_PEER_REPLACE_ALLOWEDIPS;

        if (want != 0) {
            flags |= WG_PEER_HAS_KEEPALIVE;
        }

        if (psk_want != zero) {
            flags |= WG_PEER_HAS_PRESHARED_KEY;
        }

    } else {
        have = (actual->flags & WG_PEER_HAS_KEEPALIVE) ? actual->keepalive
                                                       : 0;
        if (want != have) {
            flags |= WG_PEER_HAS_KEEPALIVE;
        }

        psk_have = (actual->flags & WG_PEER_HAS_PRESHARED_KEY)
                   ? actual->preshared_key : zero;

        if (memcmp(psk_want, psk_have, WG_KEY_SIZE) != 0) {
            flags |= WG_PEER_HAS_PRESHARED_KEY;
        }

        rc = wg_allowedips_differ(actual, desired, &aips);
        if (rc != 0) {
            return rc;
        }

        if (aips) {
            flags |= WG_PEER_REPLACE_ALLOWEDIPS;
        }
    }

    if (desired->endpoint.sa.sa_family != AF_UNSPEC
        && (actual == NULL
            || !wg_endpoint_equal(&desired->endpoint, &actual->endpoint)))
    {
        endpoint = 1;

    } else {
        endpoint = 0;
    }

    *changed = (flags != 0 || endpoint);

    if (!*changed) {
        return 0;
    }

    peer = wg_device_add_peer(changes, desired->public_key);
    if (peer == NULL) {
        return -errno;
    }

    peer->flags = flags;

    /* a change set has no flag for the endpoint: its family marks it set */
    if (endpoint) {
        peer->endpoint = desired->endpoint;
    }

    if (flags & WG_PEER_HAS_KEEPALIVE) {
        peer->keepalive = want;
    }

    if (flags & WG_PEER_HAS_PRESHARED_KEY) {
        memcpy(peer->preshared_key, psk_want, WG_KEY_SIZE);
    }

    if (flags & WG_PEER_REPLACE_ALLOWEDIPS) {
        for (i = 0; i < desired->nallowedips; i++) {
            rc = wg_peer_add_allowedip(peer, &desired->allowedips[i]);
            if (rc != 0) {
                return rc;
            }
        }
    }

    return 0;
}


int
wg_diff(const wg_device_t *actual, const wg_device_t *desired,
    wg_device_t **changes, wg_diff_stats_t *stats)
{
    int                rc, c, changed;
    size_t             i, j;
    uint8_t            want[WG_KEY_SIZE], have[WG_KEY_SIZE];
    uint32_t           fwmark;
    wg_peer_t         *peer;
    wg_device_t       *ch;
    const wg_peer_t  **sa, **sd;

    *changes = NULL;
    memset(stats, 0, sizeof(wg_diff_stats_t));

    ch = wg_device_new(desired->name[0] ? desired->name : actual->name);
    sa = wg_sorted_peers(actual);
    sd = wg_sorted_peers(desired);

    if (ch == NULL || sa == NULL || sd == NULL) {
        rc = -ENOMEM;
        goto failed;
    }

    for (i = 1; i < desired->npeers; i++) {
        if (wg_peer_key_cmp(&sd[i - 1], &sd[i]) == 0) {
            rc = -EINVAL;
            goto failed;
        }
    }

    /* keys compare clamped: a device stores and reports them clamped */
    wg_key_clamp(want, desired->private_key);
    wg_key_clamp(have, actual->private_key);

    if ((desired->flags & WG_DEV_HAS_PRIVATE_KEY)
        && (!(actual->flags & WG_DEV_HAS_PRIVATE_KEY)
            || memcmp(want, have, WG_KEY_SIZE) != 0))
    {
        memcpy(ch->private_key, desired->private_key, WG_KEY_SIZE);
        ch->flags |= WG_DEV_HAS_PRIVATE_KEY;
        stats->private_key = 1;
    }

    wg_memzero(want, sizeof(want));
    wg_memzero(have, sizeof(have));

    if ((desired->flags & WG_DEV_HAS_LISTEN_PORT)
        && (!(actual->flags & WG_DEV_HAS_LISTEN_PORT)
            || desired->listen_port != actual->listen_port))
    {
        ch->listen_port = desired->listen_port;
        ch->flags |= WG_DEV_HAS_LISTEN_PORT;
        stats->listen_port = 1;
    }

    fwmark = (actual->flags & WG_DEV_HAS_FWMARK) ? actual->fwmark : 0;

    if ((desired->flags & WG_DEV_HAS_FWMARK) && desired->fwmark != fwmark) {
        ch->fwmark = desired->fwmark;
        ch->flags |= WG_DEV_HAS_FWMARK;
        stats->fwmark = 1;
    }

    /* removals first: the device never holds more peers than either side */
    for (i = 0, j = 0; i < actual->npeers; i++) {
        while (j < desired->npeers && wg_peer_key_cmp(&sd[j], &sa[i]) < 0) {
            j++;
        }

        if (j < desired->npeers && wg_peer_key_cmp(&sd[j], &sa[i]) == 0) {
            continue;
        }

        peer = wg_device_add_peer(ch, sa[i]->public_key);
        if (peer == NULL) {
            rc = -errno;
            goto failed;
        }

        peer->flags = WG_PEER_REMOVE;
        stats->removed++;
    }

    for (i = 0, j = 0; j < desired->npeers; j++) {
        c = 1;

        while (i < actual->npeers
               && (c = wg_peer_key_cmp(&sa[i], &sd[j])) < 0)
        {
            i++;
        }

        rc = wg_diff_peer(ch, c == 0 ? sa[i] : NULL, sd[j], &changed);
        if (rc != 0) {
            goto failed;
        }

        if (c != 0) {
            stats->added++;

        } else if (changed) {
            stats->changed++;

        } else {
            stats->unchanged++;
        }
    }

    free(sa);
    free(sd);
    *changes = ch;

    return 0;

failed:

    free(sa);
    free(sd);
    wg_device_free(ch);

    return rc;
}


/* the position of a key among dev->peers by way of an index sorted by key */

static size_t
wg_apply_find(const wg_device_t *dev, const size_t *index, size_t n,
    const uint8_t *key)
{
    int     c;
    size_t  lo, hi, mid;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        c = memcmp(dev->peers[index[mid]].public_key, key, WG_KEY_SIZE);

        if (c == 0) {
            return index[mid];
        }

        if (c < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return (size_t) -1;
}


/*
 * What a device looks like once a change set is applied to it, as a
 * backend would apply it: the agent keeps such a copy of its device, so
 * that a delta costs what changed instead of a read of every peer.
 * Without WG_PEER_REPLACE_ALLOWEDIPS a peer's allowed IPs are added to.
 */

int
wg_device_apply(wg_device_t *dev, const wg_device_t *changes)
{
    int                rc;
    size_t             i, j, n, pos, *index;
    wg_peer_t         *peer;
    const wg_peer_t   *ch, **sorted;

    if (changes->flags & WG_DEV_HAS_PRIVATE_KEY) {
        wg_key_clamp(dev->private_key, changes->private_key);
        dev->flags |= WG_DEV_HAS_PRIVATE_KEY;

        if (wg_key_public(dev->public_key, dev->private_key) == 0) {
            dev->flags |= WG_DEV_HAS_PUBLIC_KEY;
        }
    }

    if (changes->flags & WG_DEV_HAS_LISTEN_PORT) {
        dev->listen_port = changes->listen_port;
        dev->flags |= WG_DEV_HAS_LISTEN_PORT;
    }

    if (changes->flags & WG_DEV_HAS_FWMARK) {
        dev->fwmark = changes->fwmark;
        dev->flags |= WG_DEV_HAS_FWMARK;
    }

    if (changes->flags & WG_DEV_REPLACE_PEERS) {
        for (i = 0; i < dev->npeers; i++) {
            dev->peers[i].flags |= WG_PEER_REMOVE;
        }
    }

    /* positions rather than pointers: adding a peer moves the array */
    n = dev->npeers;
    index = calloc(n + 1, sizeof(size_t));
    sorted = wg_sorted_peers(dev);

    if (index == NULL || sorted == NULL) {
        free(index);
        free(sorted);
        return -ENOMEM;
    }

    for (i = 0; i < n; i++) {
        index[i] = (size_t) (sorted[i] - dev->peers);
    }

    free(sorted);

    rc = 0;

    for (i = 0; i < changes->npeers; i++) {
        ch = &changes->peers[i];
        pos = wg_apply_find(dev, index, n, ch->public_key);

        if (ch->flags & WG_PEER_REMOVE) {
            if (pos != (size_t) -1) {
                dev->peers[pos].flags |= WG_PEER_REMOVE;
            }

            continue;
        }

        if (pos == (size_t) -1 || (dev->peers[pos].flags & WG_PEER_REMOVE)) {
            if (pos != (size_t) -1) {
                /* removed and added back in one change set: a fresh peer */
                peer = &dev->peers[pos];
                wg_peer_clear_allowedips(peer);
                memset(&peer->endpoint, 0, sizeof(peer->endpoint));
                memset(peer->preshared_key, 0, WG_KEY_SIZE);
                peer->keepalive = 0;
                peer->flags = 0;

            } else {
                peer = wg_device_add_peer(dev, ch->public_key);
                if (peer == NULL) {
                    rc = -errno;
                    break;
                }
            }

        } else {
            peer = &dev->peers[pos];
        }

        if (ch->endpoint.sa.sa_family != AF_UNSPEC) {
            peer->endpoint = ch->endpoint;
        }

        if (ch->flags & WG_PEER_HAS_KEEPALIVE) {
            peer->keepalive = ch->keepalive;
            peer->flags = (ch->keepalive != 0)
                          ? (peer->flags | WG_PEER_HAS_KEEPALIVE)
                          : (peer->flags & ~WG_PEER_HAS_KEEPALIVE);
        }

        if (ch->flags & WG_PEER_HAS_PRESHARED_KEY) {
            memcpy(peer->preshared_key, ch->preshared_key, WG_KEY_SIZE);
            peer->flags = wg_key_is_zero(ch->preshared_key)
                          ? (peer->flags & ~WG_PEER_HAS_PRESHARED_KEY)
                          : (peer->flags | WG_PEER_HAS_PRESHARED_KEY);
        }

        if (ch->flags & WG_PEER_REPLACE_ALLOWEDIPS) {
            wg_peer_clear_allowedips(peer);
        }

        for (j = 0; j < ch->nallowedips; j++) {
            rc = wg_peer_add_allowedip(peer, &ch->allowedips[j]);
            if (rc != 0) {
                break;
            }
        }

        if (rc != 0) {
            break;
        }
    }

    free(index);

    /* the removed ones out, the others keep their order */
    for (i = 0, j = 0; i < dev->npeers; i++) {
        peer = &dev->peers[i];

        if (peer->flags & WG_PEER_REMOVE) {
            free(peer->allowedips);
            wg_memzero(peer, sizeof(wg_peer_t));
            continue;
        }

        if (i != j) {
            dev->peers[j] = *peer;
            wg_memzero(peer, sizeof(wg_peer_t));
        }

        j++;
    }

    dev->npeers = j;

    return rc;
}
