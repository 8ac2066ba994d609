/*
 * wgctl unit tests: the difference between actual and desired devices.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"


static wg_device_t *test_device(unsigned npeers);
static wg_peer_t *test_peer(wg_device_t *dev, unsigned n);
static int test_converges(wg_device_t *actual, const wg_device_t *desired,
    size_t *sent);
static void test_apply(void);


static wg_peer_t *
test_peer(wg_device_t *dev, unsigned n)
{
    char            text[64];
    uint8_t         key[WG_KEY_SIZE];
    wg_peer_t      *peer;
    wg_allowedip_t  aip;

    test_key(key, n);
    peer = wg_device_add_peer(dev, key);

    snprintf(text, sizeof(text), "10.%u.%u.1:51820", (n >> 8) & 0xff,
             n & 0xff);
    wg_endpoint_parse(&peer->endpoint, text);

    snprintf(text, sizeof(text), "100.%u.%u.%u/32", 64 + ((n >> 16) & 0x3f),
             (n >> 8) & 0xff, n & 0xff);
    wg_allowedip_parse(&aip, text);
    wg_peer_add_allowedip(peer, &aip);

    wg_allowedip_parse(&aip, "fd00::/64");
    aip.addr.ip6.s6_addr[7] = (uint8_t) n;
    wg_peer_add_allowedip(peer, &aip);

    peer->keepalive = 25;
    peer->flags |= WG_PEER_HAS_KEEPALIVE;

    return peer;
}


static wg_device_t *
test_device(unsigned npeers)
{
    unsigned      i;
    wg_device_t  *dev;

    dev = wg_device_new("wgtest");
    dev->flags = WG_DEV_HAS_PRIVATE_KEY | WG_DEV_HAS_LISTEN_PORT;
    memset(dev->private_key, 0x42, WG_KEY_SIZE);
    dev->listen_port = 51820;

    for (i = 0; i < npeers; i++) {
        test_peer(dev, i + 1);
    }

    return dev;
}


void
test_diff(void)
{
    int               rc;
    uint8_t           key[WG_KEY_SIZE];
    wg_peer_t        *p;
    wg_device_t      *actual, *desired, *ch;
    wg_allowedip_t    aip, tmp;
    wg_diff_stats_t   st;

    /* no-op */
    actual = test_device(10);
    desired = test_device(10);

    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && wg_device_is_noop(ch) && st.unchanged == 10
       && st.added + st.removed + st.changed == 0,
       "identical devices: nothing to do");
    wg_device_free(ch);

    /* the actual side reordered, its allowed IPs reordered, duplicated */
    p = &actual->peers[3];
    tmp = p->allowedips[0];
    p->allowedips[0] = p->allowedips[1];
    p->allowedips[1] = tmp;
    wg_peer_add_allowedip(p, &tmp);

    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && wg_device_is_noop(ch) && st.unchanged == 10,
       "allowed IPs compare as sets");
    wg_device_free(ch);

    /* desired without endpoint keeps the roaming one */
    memset(&desired->peers[5].endpoint, 0, sizeof(wg_endpoint_t));
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && wg_device_is_noop(ch),
       "a desired peer without endpoint keeps the device's");
    wg_device_free(ch);
    wg_device_free(desired);

    /* add one */
    desired = test_device(11);
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && st.added == 1 && st.unchanged == 10 && ch->npeers == 1
       && ch->peers[0].public_key[3] == 11, "one peer added");
    ok(ch->npeers == 1
       && (ch->peers[0].flags & WG_PEER_REPLACE_ALLOWEDIPS)
       && (ch->peers[0].flags & WG_PEER_HAS_KEEPALIVE)
       && ch->peers[0].nallowedips == 2
       && ch->peers[0].endpoint.sa.sa_family == AF_INET,
       "the new peer is sent whole");
    ok(!(ch->flags & (WG_DEV_HAS_PRIVATE_KEY | WG_DEV_HAS_LISTEN_PORT)),
       "unchanged private key and port are not sent");
    wg_device_free(ch);
    wg_device_free(desired);

    /* remove one */
    desired = test_device(9);
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && st.removed == 1 && st.unchanged == 9 && ch->npeers == 1
       && ch->peers[0].flags == WG_PEER_REMOVE
       && ch->peers[0].public_key[3] == 10, "one peer removed");
    wg_device_free(ch);
    wg_device_free(desired);

    /* endpoint changes: only the endpoint is sent */
    desired = test_device(10);
    wg_endpoint_parse(&desired->peers[2].endpoint, "[2001:db8::7]:1234");
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && st.changed == 1 && st.unchanged == 9 && ch->npeers == 1
       && ch->peers[0].flags == 0
       && ch->peers[0].endpoint.sa.sa_family == AF_INET6
       && ch->peers[0].nallowedips == 0,
       "changed endpoint: no allowed IPs replaced");
    wg_device_free(ch);
    wg_device_free(desired);

    /* allowed IPs change: replaced, whole list */
    desired = test_device(10);
    wg_allowedip_parse(&aip, "192.168.77.0/24");
    wg_peer_add_allowedip(&desired->peers[7], &aip);
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && st.changed == 1 && ch->npeers == 1
       && ch->peers[0].flags == WG_PEER_REPLACE_ALLOWEDIPS
       && ch->peers[0].nallowedips == 3
       && ch->peers[0].endpoint.sa.sa_family == AF_UNSPEC,
       "changed allowed IPs: replaced with the full list, nothing else");
    wg_device_free(ch);

    /* keepalive absent from desired means none */
    desired->peers[7].nallowedips = 2;
    desired->peers[1].flags &= ~WG_PEER_HAS_KEEPALIVE;
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && st.changed == 1 && ch->npeers == 1
       && ch->peers[0].flags == WG_PEER_HAS_KEEPALIVE
       && ch->peers[0].keepalive == 0, "keepalive turned off");
    wg_device_free(ch);
    wg_device_free(desired);

    /* device fields */
    desired = test_device(10);
    desired->private_key[0] = 1;
    desired->listen_port = 4000;
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && st.private_key && st.listen_port && ch->npeers == 0
       && (ch->flags & WG_DEV_HAS_PRIVATE_KEY) && ch->listen_port == 4000
       && ch->private_key[0] == 1, "private key and port changes sent");
    wg_device_free(ch);

    memset(desired->private_key, 0x42, WG_KEY_SIZE);
    desired->private_key[0] = 0x47;
    desired->listen_port = 51820;
    actual->private_key[0] = 0x40;
    actual->private_key[31] = 0x42 | 0x40;
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && wg_device_is_noop(ch),
       "private keys compare clamped, as devices store them");
    wg_device_free(ch);

    desired->flags = 0;
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && wg_device_is_noop(ch),
       "absent private key and port leave the device's");
    wg_device_free(ch);

    /* duplicate desired peers */
    test_key(key, 3);
    wg_device_add_peer(desired, key);
    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc != 0 && ch == NULL, "duplicate desired peers refused");
    wg_device_free(desired);
    wg_device_free(actual);

    /* 1000 peers, one changed, one replaced */
    actual = test_device(1000);
    desired = test_device(1001);
    free(desired->peers[0].allowedips);
    memmove(&desired->peers[0], &desired->peers[1],
            1000 * sizeof(wg_peer_t));
    desired->npeers = 1000;
    desired->peers[500].keepalive = 10;

    rc = wg_diff(actual, desired, &ch, &st);
    ok(rc == 0 && st.added == 1 && st.removed == 1 && st.changed == 1
       && st.unchanged == 998 && ch->npeers == 3,
       "1000 peers: %zu added, %zu removed, %zu changed, %zu unchanged",
       st.added, st.removed, st.changed, st.unchanged);
    ok(ch->npeers == 3 && ch->peers[0].flags == WG_PEER_REMOVE
       && ch->peers[0].public_key[3] == 1, "removals come first");
    wg_device_free(ch);

    wg_device_free(desired);
    wg_device_free(actual);

    test_apply();
}


/* the change set, applied to actual, leaves nothing to do */

static int
test_converges(wg_device_t *actual, const wg_device_t *desired, size_t *sent)
{
    int               rc;
    wg_device_t      *ch, *again;
    wg_diff_stats_t   st;

    rc = wg_diff(actual, desired, &ch, &st);
    if (rc != 0) {
        return 0;
    }

    *sent = ch->npeers;
    rc = wg_device_apply(actual, ch);
    wg_device_free(ch);

    if (rc != 0 || wg_diff(actual, desired, &again, &st) != 0) {
        return 0;
    }

    rc = wg_device_is_noop(again) && st.added == 0 && st.removed == 0
         && st.changed == 0;
    wg_device_free(again);

    return rc;
}


static void
test_apply(void)
{
    size_t           sent;
    uint8_t          key[WG_KEY_SIZE];
    wg_peer_t       *p;
    wg_device_t     *actual, *desired, *ch;
    wg_allowedip_t   aip;

    actual = wg_device_new("wgtest");
    desired = test_device(10);

    ok(test_converges(actual, desired, &sent) && sent == 10
       && actual->npeers == 10 && actual->listen_port == 51820
       && (actual->flags & WG_DEV_HAS_PUBLIC_KEY),
       "apply: an empty device takes 10 peers, key and port");

    wg_device_free(desired);
    desired = test_device(12);
    wg_endpoint_parse(&desired->peers[2].endpoint, "10.9.9.9:9");
    wg_allowedip_parse(&aip, "192.168.7.0/24");
    wg_peer_add_allowedip(&desired->peers[4], &aip);
    desired->peers[6].flags &= ~WG_PEER_HAS_KEEPALIVE;
    desired->peers[8].flags |= WG_PEER_HAS_PRESHARED_KEY;
    memset(desired->peers[8].preshared_key, 7, WG_KEY_SIZE);
    free(desired->peers[0].allowedips);
    memmove(&desired->peers[0], &desired->peers[1],
            11 * sizeof(wg_peer_t));
    desired->npeers = 11;

    ok(test_converges(actual, desired, &sent) && sent == 7
       && actual->npeers == 11,
       "apply: add 2, remove 1, endpoint, allowed IPs, keepalive, psk");

    test_key(key, 5);
    p = wg_device_find_peer(actual, key);
    ok(p != NULL && p->nallowedips == 3, "apply: allowed IPs replaced whole");

    test_key(key, 1);
    ok(wg_device_find_peer(actual, key) == NULL, "apply: the removed peer "
       "is gone");

    /* without REPLACE_ALLOWEDIPS, allowed IPs add up, as on a device */
    ch = wg_device_new("wgtest");
    test_key(key, 3);
    p = wg_device_add_peer(ch, key);
    wg_allowedip_parse(&aip, "10.77.0.0/16");
    wg_peer_add_allowedip(p, &aip);
    wg_device_apply(actual, ch);
    p = wg_device_find_peer(actual, key);
    ok(p != NULL && p->nallowedips == 3 && p->keepalive == 25,
       "apply: allowed IPs without replace are added");
    wg_device_free(ch);

    ch = wg_device_new("wgtest");
    ch->flags = WG_DEV_REPLACE_PEERS;
    wg_device_apply(actual, ch);
    ok(actual->npeers == 0, "apply: replace peers empties the device");
    wg_device_free(ch);

    wg_device_free(desired);
    wg_device_free(actual);

    actual = test_device(1000);
    desired = test_device(1001);
    desired->peers[500].keepalive = 10;
    free(desired->peers[0].allowedips);
    memmove(&desired->peers[0], &desired->peers[1],
            1000 * sizeof(wg_peer_t));
    desired->npeers = 1000;

    ok(test_converges(actual, desired, &sent) && sent == 3
       && actual->npeers == 1000,
       "apply: 1000 peers, three changes");

    wg_device_free(desired);
    wg_device_free(actual);
}
