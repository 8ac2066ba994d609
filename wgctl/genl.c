/*
 * wgctl: the kernel backend, generic netlink family "wireguard" through
 * libmnl.  A change set larger than one message is split the way wg(8)
 * splits it: peers continue in the next message, and a peer whose allowed
 * IPs do not fit continues there with its remaining allowed IPs only.
 */


#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/wireguard.h>

#include "genl.h"
#include "rtnl.h"


#define WG_GENL_DUMP_SIZE  32768


typedef struct {
    wg_device_t             *dev;
    int                      error;
} wg_genl_get_ctx_t;


static int wg_genl_family(struct mnl_socket *nl, uint16_t *id);
static int wg_genl_family_attr(const struct nlattr *attr, void *data);
static int wg_genl_family_cb(const struct nlmsghdr *nlh, void *data);
static int wg_genl_put_peer_head(struct nlmsghdr *nlh, size_t size,
    const wg_peer_t *peer);
static int wg_genl_get_cb(const struct nlmsghdr *nlh, void *data);
static int wg_genl_device_attr(const struct nlattr *attr, void *data);
static int wg_genl_peer_attr(const struct nlattr *attr, void *data);
static int wg_genl_peers(const struct nlattr *attr, void *data);
static int wg_genl_allowedips(const struct nlattr *attr, void *data);
static int wg_genl_allowedip_attr(const struct nlattr *attr, void *data);


size_t
wg_genl_message_size(void)
{
    return (size_t) MNL_SOCKET_BUFFER_SIZE;
}


static int
wg_genl_family_attr(const struct nlattr *attr, void *data)
{
    uint16_t  *id;

    id = data;

    if (mnl_attr_get_type(attr) == CTRL_ATTR_FAMILY_ID
        && mnl_attr_validate(attr, MNL_TYPE_U16) == 0)
    {
        *id = mnl_attr_get_u16(attr);
    }

    return MNL_CB_OK;
}


static int
wg_genl_family_cb(const struct nlmsghdr *nlh, void *data)
{
    return mnl_attr_parse(nlh, sizeof(struct genlmsghdr),
                          wg_genl_family_attr, data);
}


/* resolves the family by name; absent means the module is not loaded */

static int
wg_genl_family(struct mnl_socket *nl, uint16_t *id)
{
    int                 rc;
    char                buf[1024], *rbuf;
    struct nlmsghdr    *nlh;
    struct genlmsghdr  *genl;

    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = GENL_ID_CTRL;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = (uint32_t) time(NULL);

    genl = mnl_nlmsg_put_extra_header(nlh, sizeof(struct genlmsghdr));
    genl->cmd = CTRL_CMD_GETFAMILY;
    genl->version = 1;

    if (!mnl_attr_put_strz_check(nlh, sizeof(buf), CTRL_ATTR_FAMILY_NAME,
                                 WG_GENL_NAME))
    {
        return -EMSGSIZE;
    }

    rbuf = malloc(WG_GENL_DUMP_SIZE);
    if (rbuf == NULL) {
        return -ENOMEM;
    }

    *id = 0;

    rc = wg_nl_request(nl, nlh, rbuf, WG_GENL_DUMP_SIZE, wg_genl_family_cb,
                       id);
    free(rbuf);

    if (rc == -ENOENT || (rc == 0 && *id == 0)) {
        return -EPROTONOSUPPORT;
    }

    return rc;
}


static int
wg_genl_put_peer_head(struct nlmsghdr *nlh, size_t size,
    const wg_peer_t *peer)
{
    size_t  len;

    if (peer->flags & WG_PEER_HAS_PRESHARED_KEY) {
        if (!mnl_attr_put_check(nlh, size, WGPEER_A_PRESHARED_KEY,
                                WG_KEY_SIZE, peer->preshared_key))
        {
            return -1;
        }
    }

    if (peer->endpoint.sa.sa_family == AF_INET
        || peer->endpoint.sa.sa_family == AF_INET6)
    {
        len = (peer->endpoint.sa.sa_family == AF_INET)
              ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);

        if (!mnl_attr_put_check(nlh, size, WGPEER_A_ENDPOINT, len,
                                &peer->endpoint))
        {
            return -1;
        }
    }

    if (peer->flags & WG_PEER_HAS_KEEPALIVE) {
        if (!mnl_attr_put_u16_check(nlh, size,
                                    WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
                                    peer->keepalive))
        {
            return -1;
        }
    }

    return 0;
}


/*
 * Builds the next WG_CMD_SET_DEVICE message of a change set into buf
 * (size bytes at most) and advances the cursor.  Returns the message's
 * length, 0 when the change set is complete, or -EMSGSIZE when not even
 * one peer fits into an empty message.  Every peer's flags, endpoint and
 * keepalive travel once, with its first allowed IP; every allowed IP once.
 */

int
wg_genl_build_set(const wg_device_t *dev, uint16_t family, uint32_t seq,
    void *buf, size_t size, wg_genl_cursor_t *cur)
{
    int                 progress, fitted;
    size_t              alen;
    uint32_t            flags;
    struct nlattr      *peers, *pnest, *anest, *inest;
    struct nlmsghdr    *nlh;
    struct genlmsghdr  *genl;
    const wg_peer_t       *peer;
    const wg_allowedip_t  *aip;

    if (cur->done) {
        return 0;
    }

    if (size < MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(struct genlmsghdr))) {
        return -EMSGSIZE;
    }

    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = family;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = seq;

    genl = mnl_nlmsg_put_extra_header(nlh, sizeof(struct genlmsghdr));
    genl->cmd = WG_CMD_SET_DEVICE;
    genl->version = WG_GENL_VERSION;

    if (!mnl_attr_put_strz_check(nlh, size, WGDEVICE_A_IFNAME, dev->name)) {
        return -EMSGSIZE;
    }

    progress = 0;

    if (!cur->started) {
        flags = 0;

        if ((dev->flags & WG_DEV_HAS_PRIVATE_KEY)
            && !mnl_attr_put_check(nlh, size, WGDEVICE_A_PRIVATE_KEY,
                                   WG_KEY_SIZE, dev->private_key))
        {
            return -EMSGSIZE;
        }

        if ((dev->flags & WG_DEV_HAS_LISTEN_PORT)
            && !mnl_attr_put_u16_check(nlh, size, WGDEVICE_A_LISTEN_PORT,
                                       dev->listen_port))
        {
            return -EMSGSIZE;
        }

        if ((dev->flags & WG_DEV_HAS_FWMARK)
            && !mnl_attr_put_u32_check(nlh, size, WGDEVICE_A_FWMARK,
                                       dev->fwmark))
        {
            return -EMSGSIZE;
        }

        if (dev->flags & WG_DEV_REPLACE_PEERS) {
            flags |= WGDEVICE_F_REPLACE_PEERS;
        }

        if (flags
            && !mnl_attr_put_u32_check(nlh, size, WGDEVICE_A_FLAGS, flags))
        {
            return -EMSGSIZE;
        }

        cur->started = 1;
        progress = 1;
    }

    if (cur->peer >= dev->npeers) {
        cur->done = 1;
        return (int) nlh->nlmsg_len;
    }

    peers = mnl_attr_nest_start_check(nlh, size, WGDEVICE_A_PEERS);
    if (peers == NULL) {
        goto full;
    }

    for ( /* void */ ; cur->peer < dev->npeers;
         cur->peer++, cur->allowedip = 0)
    {
        peer = &dev->peers[cur->peer];

        pnest = mnl_attr_nest_start_check(nlh, size, 0);
        if (pnest == NULL) {
            goto peers_full;
        }

        if (!mnl_attr_put_check(nlh, size, WGPEER_A_PUBLIC_KEY, WG_KEY_SIZE,
                                peer->public_key))
        {
            goto peer_full;
        }

        flags = 0;

        if (peer->flags & WG_PEER_REMOVE) {
            flags |= WGPEER_F_REMOVE_ME;
        }

        if (cur->allowedip == 0) {
            if (peer->flags & WG_PEER_REPLACE_ALLOWEDIPS) {
                flags |= WGPEER_F_REPLACE_ALLOWEDIPS;
            }

            if (wg_genl_put_peer_head(nlh, size, peer) != 0) {
                goto peer_full;
            }
        }

        if (flags
            && !mnl_attr_put_u32_check(nlh, size, WGPEER_A_FLAGS, flags))
        {
            goto peer_full;
        }

        if (!(peer->flags & WG_PEER_REMOVE)
            && cur->allowedip < peer->nallowedips)
        {
            anest = mnl_attr_nest_start_check(nlh, size,
                                              WGPEER_A_ALLOWEDIPS);
            if (anest == NULL) {
                goto peer_full;
            }

            fitted = 0;

            for ( /* void */ ; cur->allowedip < peer->nallowedips;
                 cur->allowedip++)
            {
                aip = &peer->allowedips[cur->allowedip];
                alen = (aip->family == AF_INET6) ? 16 : 4;

                inest = mnl_attr_nest_start_check(nlh, size, 0);
                if (inest == NULL) {
                    break;
                }

                if (!mnl_attr_put_u16_check(nlh, size, WGALLOWEDIP_A_FAMILY,
                                            aip->family)
                    || !mnl_attr_put_check(nlh, size, WGALLOWEDIP_A_IPADDR,
                                           alen, &aip->addr)
                    || !mnl_attr_put_u8_check(nlh, size,
                                              WGALLOWEDIP_A_CIDR_MASK,
                                              aip->cidr))
                {
                    mnl_attr_nest_cancel(nlh, inest);
                    break;
                }

                mnl_attr_nest_end(nlh, inest);
                fitted++;
            }

            if (fitted == 0) {
                /* the peer starts over, whole, in the next message */
                goto peer_full;
            }

            mnl_attr_nest_end(nlh, anest);

            if (cur->allowedip < peer->nallowedips) {
                /* continues in the next message, allowed IPs only */
                mnl_attr_nest_end(nlh, pnest);
                mnl_attr_nest_end(nlh, peers);
                return (int) nlh->nlmsg_len;
            }
        }

        mnl_attr_nest_end(nlh, pnest);
        progress = 1;
    }

    mnl_attr_nest_end(nlh, peers);
    cur->done = 1;

    return (int) nlh->nlmsg_len;

peer_full:

    mnl_attr_nest_cancel(nlh, pnest);

peers_full:

    if (!progress) {
        return -EMSGSIZE;
    }

    if (mnl_attr_get_payload_len(peers) == 0) {
        mnl_attr_nest_cancel(nlh, peers);

    } else {
        mnl_attr_nest_end(nlh, peers);
    }

    return (int) nlh->nlmsg_len;

full:

    return progress ? (int) nlh->nlmsg_len : -EMSGSIZE;
}


int
wg_genl_set(const wg_device_t *dev, wg_io_stats_t *io)
{
    int                 rc, len;
    char               *buf, *rbuf;
    size_t              size;
    uint16_t            family;
    uint32_t            seq;
    wg_genl_cursor_t    cur;
    struct mnl_socket  *nl;

    size = wg_genl_message_size();
    buf = NULL;
    rbuf = NULL;

    nl = wg_nl_open(NETLINK_GENERIC);
    if (nl == NULL) {
        return -errno;
    }

    rc = wg_genl_family(nl, &family);
    if (rc != 0) {
        goto done;
    }

    buf = calloc(1, size);
    rbuf = malloc(WG_GENL_DUMP_SIZE);

    if (buf == NULL || rbuf == NULL) {
        rc = -ENOMEM;
        goto done;
    }

    memset(&cur, 0, sizeof(wg_genl_cursor_t));
    seq = (uint32_t) time(NULL);

    for ( ;; ) {
        len = wg_genl_build_set(dev, family, ++seq, buf, size, &cur);

        if (len <= 0) {
            rc = len;
            break;
        }

        /* one ACK per message: a failure names the message it belongs to */
        rc = wg_nl_request(nl, (struct nlmsghdr *) buf, rbuf,
                           WG_GENL_DUMP_SIZE, NULL, NULL);

        if (io != NULL) {
            io->requests++;
            io->bytes += (size_t) len;
        }

        wg_memzero(buf, (size_t) len);

        if (rc != 0) {
            break;
        }
    }

done:

    if (buf != NULL) {
        wg_memzero(buf, size);
        free(buf);
    }

    free(rbuf);
    mnl_socket_close(nl);

    return rc;
}


static int
wg_genl_allowedip_attr(const struct nlattr *attr, void *data)
{
    size_t           len;
    wg_allowedip_t  *aip;

    aip = data;
    len = mnl_attr_get_payload_len(attr);

    switch (mnl_attr_get_type(attr)) {

    case WGALLOWEDIP_A_FAMILY:
        if (mnl_attr_validate(attr, MNL_TYPE_U16) == 0) {
            aip->family = mnl_attr_get_u16(attr);
        }
        break;

    case WGALLOWEDIP_A_IPADDR:
        if (len == 4 || len == 16) {
            memcpy(&aip->addr, mnl_attr_get_payload(attr), len);
        }
        break;

    case WGALLOWEDIP_A_CIDR_MASK:
        if (mnl_attr_validate(attr, MNL_TYPE_U8) == 0) {
            aip->cidr = mnl_attr_get_u8(attr);
        }
        break;
    }

    return MNL_CB_OK;
}


static int
wg_genl_allowedips(const struct nlattr *attr, void *data)
{
    wg_peer_t       *peer;
    wg_allowedip_t   aip;

    peer = data;
    memset(&aip, 0, sizeof(wg_allowedip_t));

    if (mnl_attr_parse_nested(attr, wg_genl_allowedip_attr, &aip)
        != MNL_CB_OK)
    {
        return MNL_CB_ERROR;
    }

    if (!((aip.family == AF_INET && aip.cidr <= 32)
          || (aip.family == AF_INET6 && aip.cidr <= 128)))
    {
        return MNL_CB_ERROR;
    }

    if (wg_peer_add_allowedip(peer, &aip) != 0) {
        return MNL_CB_ERROR;
    }

    return MNL_CB_OK;
}


static int
wg_genl_peer_attr(const struct nlattr *attr, void *data)
{
    size_t      len;
    wg_peer_t  *peer;

    peer = data;
    len = mnl_attr_get_payload_len(attr);

    switch (mnl_attr_get_type(attr)) {

    case WGPEER_A_PUBLIC_KEY:
        if (len == WG_KEY_SIZE) {
            memcpy(peer->public_key, mnl_attr_get_payload(attr), len);
        }
        break;

    case WGPEER_A_PRESHARED_KEY:
        if (len == WG_KEY_SIZE) {
            memcpy(peer->preshared_key, mnl_attr_get_payload(attr), len);
            if (!wg_key_is_zero(peer->preshared_key)) {
                peer->flags |= WG_PEER_HAS_PRESHARED_KEY;
            }
        }
        break;

    case WGPEER_A_ENDPOINT:
        if (len == sizeof(struct sockaddr_in)
            || len == sizeof(struct sockaddr_in6))
        {
            memcpy(&peer->endpoint, mnl_attr_get_payload(attr), len);

            if (!((peer->endpoint.sa.sa_family == AF_INET
                   && len == sizeof(struct sockaddr_in))
                  || (peer->endpoint.sa.sa_family == AF_INET6
                      && len == sizeof(struct sockaddr_in6))))
            {
                memset(&peer->endpoint, 0, sizeof(wg_endpoint_t));
            }
        }
        break;

    case WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL:
        if (mnl_attr_validate(attr, MNL_TYPE_U16) == 0) {
            peer->keepalive = mnl_attr_get_u16(attr);
            peer->flags |= WG_PEER_HAS_KEEPALIVE;
        }
        break;

    case WGPEER_A_LAST_HANDSHAKE_TIME:
        if (len == 16) {
            int64_t  ts[2];

            memcpy(ts, mnl_attr_get_payload(attr), sizeof(ts));
            peer->last_handshake.tv_sec = (time_t) ts[0];
            peer->last_handshake.tv_nsec = (long) ts[1];
        }
        break;

    case WGPEER_A_RX_BYTES:
        if (mnl_attr_validate(attr, MNL_TYPE_U64) == 0) {
            peer->rx_bytes = mnl_attr_get_u64(attr);
        }
        break;

    case WGPEER_A_TX_BYTES:
        if (mnl_attr_validate(attr, MNL_TYPE_U64) == 0) {
            peer->tx_bytes = mnl_attr_get_u64(attr);
        }
        break;

    case WGPEER_A_ALLOWEDIPS:
        return mnl_attr_parse_nested(attr, wg_genl_allowedips, peer);
    }

    return MNL_CB_OK;
}


static int
wg_genl_peers(const struct nlattr *attr, void *data)
{
    int                   rc;
    uint8_t              *key;
    wg_peer_t            *peer, *last;
    wg_device_t          *dev;
    const struct nlattr  *pk;

    dev = data;

    /* a dump continues a peer in the next message: same key, more IPs */
    key = NULL;

    mnl_attr_for_each_nested(pk, attr) {
        if (mnl_attr_get_type(pk) == WGPEER_A_PUBLIC_KEY
            && mnl_attr_get_payload_len(pk) == WG_KEY_SIZE)
        {
            key = mnl_attr_get_payload(pk);
            break;
        }
    }

    if (key == NULL) {
        return MNL_CB_ERROR;
    }

    last = dev->npeers ? &dev->peers[dev->npeers - 1] : NULL;

    if (last != NULL
        && memcmp(last->public_key, key, WG_KEY_SIZE)
           == 0)
    {
        peer = last;

    } else {
        peer = wg_device_add_peer(dev, key);
        if (peer == NULL) {
            return MNL_CB_ERROR;
        }
    }

    rc = mnl_attr_parse_nested(attr, wg_genl_peer_attr, peer);

    return rc == MNL_CB_OK ? MNL_CB_OK : MNL_CB_ERROR;
}


static int
wg_genl_device_attr(const struct nlattr *attr, void *data)
{
    size_t        len;
    wg_device_t  *dev;

    dev = data;
    len = mnl_attr_get_payload_len(attr);

    switch (mnl_attr_get_type(attr)) {

    case WGDEVICE_A_IFINDEX:
        if (mnl_attr_validate(attr, MNL_TYPE_U32) == 0) {
            dev->ifindex = mnl_attr_get_u32(attr);
        }
        break;

    case WGDEVICE_A_PRIVATE_KEY:
        if (len == WG_KEY_SIZE) {
            memcpy(dev->private_key, mnl_attr_get_payload(attr), len);
            if (!wg_key_is_zero(dev->private_key)) {
                dev->flags |= WG_DEV_HAS_PRIVATE_KEY;
            }
        }
        break;

    case WGDEVICE_A_PUBLIC_KEY:
        if (len == WG_KEY_SIZE) {
            memcpy(dev->public_key, mnl_attr_get_payload(attr), len);
            if (!wg_key_is_zero(dev->public_key)) {
                dev->flags |= WG_DEV_HAS_PUBLIC_KEY;
            }
        }
        break;

    case WGDEVICE_A_LISTEN_PORT:
        if (mnl_attr_validate(attr, MNL_TYPE_U16) == 0) {
            dev->listen_port = mnl_attr_get_u16(attr);
            dev->flags |= WG_DEV_HAS_LISTEN_PORT;
        }
        break;

    case WGDEVICE_A_FWMARK:
        if (mnl_attr_validate(attr, MNL_TYPE_U32) == 0) {
            dev->fwmark = mnl_attr_get_u32(attr);
            dev->flags |= WG_DEV_HAS_FWMARK;
        }
        break;

    case WGDEVICE_A_PEERS:
        return mnl_attr_parse_nested(attr, wg_genl_peers, dev);
    }

    return MNL_CB_OK;
}


static int
wg_genl_get_cb(const struct nlmsghdr *nlh, void *data)
{
    wg_genl_get_ctx_t  *ctx;

    ctx = data;

    if (mnl_attr_parse(nlh, sizeof(struct genlmsghdr), wg_genl_device_attr,
                       ctx->dev)
        != MNL_CB_OK)
    {
        ctx->error = -EPROTO;
        return MNL_CB_ERROR;
    }

    return MNL_CB_OK;
}


int
wg_genl_get(const char *ifname, wg_device_t **out)
{
    int                  rc;
    char                 req[256], *rbuf;
    uint16_t             family;
    wg_genl_get_ctx_t    ctx;
    struct nlmsghdr     *nlh;
    struct genlmsghdr   *genl;
    struct mnl_socket   *nl;

    *out = NULL;

    if (!wg_ifname_valid(ifname)) {
        return -EINVAL;
    }

    ctx.error = 0;
    ctx.dev = wg_device_new(ifname);
    rbuf = malloc(WG_GENL_DUMP_SIZE);

    if (ctx.dev == NULL || rbuf == NULL) {
        rc = -ENOMEM;
        goto done;
    }

    nl = wg_nl_open(NETLINK_GENERIC);
    if (nl == NULL) {
        rc = -errno;
        goto done;
    }

    rc = wg_genl_family(nl, &family);

    if (rc == 0) {
        nlh = mnl_nlmsg_put_header(req);
        nlh->nlmsg_type = family;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP;
        nlh->nlmsg_seq = (uint32_t) time(NULL) + 1;

        genl = mnl_nlmsg_put_extra_header(nlh, sizeof(struct genlmsghdr));
        genl->cmd = WG_CMD_GET_DEVICE;
        genl->version = WG_GENL_VERSION;

        mnl_attr_put_strz(nlh, WGDEVICE_A_IFNAME, ifname);

        rc = wg_nl_request(nl, nlh, rbuf, WG_GENL_DUMP_SIZE, wg_genl_get_cb,
                           &ctx);
        if (rc == 0 && ctx.error != 0) {
            rc = ctx.error;
        }
    }

    mnl_socket_close(nl);

done:

    if (rbuf != NULL) {
        wg_memzero(rbuf, WG_GENL_DUMP_SIZE);
        free(rbuf);
    }

    if (rc != 0) {
        wg_device_free(ctx.dev);
        return rc;
    }

    *out = ctx.dev;

    return 0;
}
