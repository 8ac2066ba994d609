/*
 * wgctl unit tests: a large change set split into generic netlink messages,
 * built into buffers and read back without a kernel.  Every message within
 * the size limit; every peer's head (flags, endpoint, keepalive) and every
 * allowed IP present exactly once.
 */


#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <linux/wireguard.h>

#include "test.h"
#include "genl.h"


#define TEST_PEERS    1000
#define TEST_BIG      2000          /* allowed IPs of one extra peer */
#define TEST_REMOVED  50
#define TEST_ALL      (TEST_PEERS + 1 + TEST_REMOVED)


typedef struct {
    unsigned                 heads[TEST_ALL + 1];
    unsigned                 removes[TEST_ALL + 1];
    unsigned                *aips[TEST_ALL + 1];
    unsigned                 naips[TEST_ALL + 1];
    unsigned                 messages;
    unsigned                 bad;
    unsigned                 device_attrs;
    size_t                   largest;
} test_genl_seen_t;


static wg_device_t *test_genl_device(void);
static unsigned test_genl_index(const uint8_t *key);
static void test_genl_peer(const struct nlattr *peer, test_genl_seen_t *s);
static int test_genl_run(const wg_device_t *dev, size_t size,
    test_genl_seen_t *s);
static void test_genl_check(const wg_device_t *dev, test_genl_seen_t *s,
    size_t size);


static unsigned
test_genl_index(const uint8_t *key)
{
    return (unsigned) key[0] << 24 | (unsigned) key[1] << 16
           | (unsigned) key[2] << 8 | key[3];
}


static wg_device_t *
test_genl_device(void)
{
    unsigned         n, j, count;
    uint8_t          key[WG_KEY_SIZE];
    wg_peer_t       *p;
    wg_device_t     *dev;
    wg_allowedip_t   aip;

    dev = wg_device_new("wgtest");
    dev->flags = WG_DEV_HAS_PRIVATE_KEY | WG_DEV_HAS_LISTEN_PORT
                 | WG_DEV_REPLACE_PEERS;
    memset(dev->private_key, 7, WG_KEY_SIZE);
    dev->listen_port = 51820;

    for (n = 1; n <= TEST_ALL; n++) {
        test_key(key, n);
        p = wg_device_add_peer(dev, key);

        if (n > TEST_PEERS + 1) {
            p->flags = WG_PEER_REMOVE;
            continue;
        }

        p->flags = WG_PEER_REPLACE_ALLOWEDIPS | WG_PEER_HAS_KEEPALIVE;
        p->keepalive = 25;

        if (n % 2) {
            wg_endpoint_parse(&p->endpoint, "192.0.2.1:51820");

        } else {
            wg_endpoint_parse(&p->endpoint, "[2001:db8::1]:51820");
        }

        count = (n == TEST_PEERS + 1) ? TEST_BIG : 1 + n % 3;

        for (j = 0; j < count; j++) {
            memset(&aip, 0, sizeof(aip));
            aip.family = AF_INET6;
            aip.cidr = 128;
            aip.addr.ip6.s6_addr[0] = 0xfd;
            aip.addr.ip6.s6_addr[8] = (uint8_t) (n >> 8);
            aip.addr.ip6.s6_addr[9] = (uint8_t) n;
            aip.addr.ip6.s6_addr[14] = (uint8_t) (j >> 8);
            aip.addr.ip6.s6_addr[15] = (uint8_t) j;
            wg_peer_add_allowedip(p, &aip);
        }
    }

    return dev;
}


static void
test_genl_peer(const struct nlattr *peer, test_genl_seen_t *s)
{
    unsigned              n, j, head;
    uint32_t              flags;
    const uint8_t        *a6;
    const struct nlattr  *attr, *aip, *f;

    n = 0;
    head = 0;
    flags = 0;

    mnl_attr_for_each_nested(attr, peer) {
        if (mnl_attr_get_type(attr) == WGPEER_A_PUBLIC_KEY
            && mnl_attr_get_payload_len(attr) == WG_KEY_SIZE)
        {
            n = test_genl_index(mnl_attr_get_payload(attr));
        }
    }

    if (n == 0 || n > TEST_ALL) {
        s->bad++;
        return;
    }

    mnl_attr_for_each_nested(attr, peer) {
        switch (mnl_attr_get_type(attr)) {

        case WGPEER_A_FLAGS:
            flags = mnl_attr_get_u32(attr);
            break;

        case WGPEER_A_ENDPOINT:
        case WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL:
            head = 1;
            break;

        case WGPEER_A_ALLOWEDIPS:
            mnl_attr_for_each_nested(aip, attr) {
                a6 = NULL;

                mnl_attr_for_each_nested(f, aip) {
                    if (mnl_attr_get_type(f) == WGALLOWEDIP_A_IPADDR
                        && mnl_attr_get_payload_len(f) == 16)
                    {
                        a6 = mnl_attr_get_payload(f);
                    }
                }

                if (a6 == NULL || (unsigned) (a6[8] << 8 | a6[9]) != n) {
                    s->bad++;
                    continue;
                }

                j = (unsigned) (a6[14] << 8 | a6[15]);

                if (j >= s->naips[n]) {
                    s->bad++;
                    continue;
                }

                s->aips[n][j]++;
            }
            break;
        }
    }

    if (flags & WGPEER_F_REPLACE_ALLOWEDIPS) {
        head = 1;
    }

    if (flags & WGPEER_F_REMOVE_ME) {
        s->removes[n]++;
    }

    s->heads[n] += head;
}


static int
test_genl_run(const wg_device_t *dev, size_t size, test_genl_seen_t *s)
{
    int                   len;
    char                 *buf;
    wg_genl_cursor_t      cur;
    struct nlmsghdr      *nlh;
    struct genlmsghdr    *genl;
    const struct nlattr  *attr, *peer;

    buf = malloc(size);
    memset(&cur, 0, sizeof(cur));

    for ( ;; ) {
        len = wg_genl_build_set(dev, 0x42, s->messages + 1, buf, size, &cur);

        if (len <= 0) {
            break;
        }

        s->messages++;
        nlh = (struct nlmsghdr *) buf;

        if ((size_t) len > s->largest) {
            s->largest = (size_t) len;
        }

        if ((size_t) len > size || nlh->nlmsg_len != (uint32_t) len
            || !mnl_nlmsg_ok(nlh, len) || nlh->nlmsg_type != 0x42
            || (nlh->nlmsg_flags & (NLM_F_REQUEST | NLM_F_ACK))
               != (NLM_F_REQUEST | NLM_F_ACK))
        {
            s->bad++;
            continue;
        }

        genl = mnl_nlmsg_get_payload(nlh);

        if (genl->cmd != WG_CMD_SET_DEVICE
            || genl->version != WG_GENL_VERSION)
        {
            s->bad++;
        }

        mnl_attr_for_each(attr, nlh, sizeof(struct genlmsghdr)) {
            switch (mnl_attr_get_type(attr)) {

            case WGDEVICE_A_IFNAME:
                if (strcmp(mnl_attr_get_str(attr), "wgtest") != 0) {
                    s->bad++;
                }
                break;

            case WGDEVICE_A_PRIVATE_KEY:
            case WGDEVICE_A_LISTEN_PORT:
            case WGDEVICE_A_FLAGS:
                s->device_attrs++;
                break;

            case WGDEVICE_A_PEERS:
                mnl_attr_for_each_nested(peer, attr) {
                    test_genl_peer(peer, s);
                }
                break;
            }
        }

        if (s->messages > 100000) {
            break;
        }
    }

    free(buf);

    return len;
}


static void
test_genl_check(const wg_device_t *dev, test_genl_seen_t *s, size_t size)
{
    int       rc;
    unsigned  n, j, heads, aips, removes;

    memset(s, 0, sizeof(test_genl_seen_t));

    for (n = 1; n <= TEST_ALL; n++) {
        s->naips[n] = (unsigned) dev->peers[n - 1].nallowedips;
        s->aips[n] = calloc(s->naips[n] + 1, sizeof(unsigned));
    }

    rc = test_genl_run(dev, size, s);

    heads = 0;
    aips = 0;
    removes = 0;

    for (n = 1; n <= TEST_ALL; n++) {
        if (n <= TEST_PEERS + 1) {
            heads += (s->heads[n] == 1 && s->removes[n] == 0);

        } else {
            removes += (s->removes[n] == 1 && s->heads[n] == 0);
        }

        for (j = 0; j < s->naips[n]; j++) {
            aips += (s->aips[n][j] == 1);
        }

        free(s->aips[n]);
    }

    test_diag("%zu-byte limit: %u messages, largest %zu bytes", size,
              s->messages, s->largest);

    ok(rc == 0 && s->bad == 0, "%zu: all %u messages well-formed", size,
       s->messages);
    ok(s->largest <= size, "%zu: every message within the limit", size);
    ok(s->device_attrs == 3, "%zu: device attributes sent once", size);
    ok(heads == TEST_PEERS + 1,
       "%zu: each of %u peers' head sent exactly once", size,
       TEST_PEERS + 1);
    ok(removes == TEST_REMOVED, "%zu: each removal sent exactly once", size);
    ok(aips == TEST_PEERS * 2 + TEST_BIG,
       "%zu: each of %u allowed IPs sent exactly once", size,
       TEST_PEERS * 2 + TEST_BIG);
}


void
test_genl(void)
{
    int                 len;
    char                buf[64];
    wg_device_t        *dev;
    wg_genl_cursor_t    cur;
    test_genl_seen_t   *s;

    dev = test_genl_device();
    s = calloc(1, sizeof(test_genl_seen_t));

    test_genl_check(dev, s, wg_genl_message_size());
    ok(s->messages > 20, "1000 peers need several messages (%u)",
       s->messages);

    test_genl_check(dev, s, 256);

    memset(&cur, 0, sizeof(cur));
    len = wg_genl_build_set(dev, 0x42, 1, buf, sizeof(buf), &cur);
    ok(len == -EMSGSIZE, "a limit too small for one peer fails, no loop");

    dev->npeers = 0;
    memset(&cur, 0, sizeof(cur));
    len = wg_genl_build_set(dev, 0x42, 1, s, 4096, &cur);
    ok(len > 0 && wg_genl_build_set(dev, 0x42, 2, s, 4096, &cur) == 0,
       "no peers: one message");
    dev->npeers = TEST_ALL;

    free(s);
    wg_device_free(dev);
}
