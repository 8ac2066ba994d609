/*
 * wgctl: rtnetlink through libmnl: create, look up, configure and delete
 * links; set the device's address; add routes through it.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/ip.h>

#include "wgdev.h"
#include "rtnl.h"


#define WG_RTNL_BUF_SIZE  32768
#define WG_RTNL_MAX_ADDRS 256


typedef struct {
    wg_rtnl_link_t          *link;
    const char              *kind;
    char                   **names;
    size_t                   n;
    size_t                   cap;
    int                      error;
} wg_rtnl_link_ctx_t;


typedef struct {
    uint32_t                 ifindex;
    int                      family;
    size_t                   n;
    struct {
        uint8_t              addr[16];
        uint8_t              prefixlen;
    }                        addrs[WG_RTNL_MAX_ADDRS];
} wg_rtnl_addr_ctx_t;


static int wg_rtnl_talk(struct nlmsghdr *nlh, mnl_cb_t cb, void *data);
static struct nlmsghdr *wg_rtnl_header(char *buf, uint16_t type,
    uint16_t flags);
static int wg_rtnl_linkinfo_attr(const struct nlattr *attr, void *data);
static int wg_rtnl_link_attr(const struct nlattr *attr, void *data);
static int wg_rtnl_link_cb(const struct nlmsghdr *nlh, void *data);
static int wg_rtnl_addr_attr(const struct nlattr *attr, void *data);
static int wg_rtnl_addr_cb(const struct nlmsghdr *nlh, void *data);
static int wg_rtnl_addr_put(uint16_t type, uint16_t flags, uint32_t ifindex,
    int family, const void *addr, uint8_t prefixlen);
static int wg_rtnl_promote_secondaries(uint32_t ifindex);


static uint32_t  wg_rtnl_seq;


struct mnl_socket *
wg_nl_open(int bus)
{
    int                 err;
    struct timeval      tv;
    struct mnl_socket  *nl;

    nl = mnl_socket_open(bus);
    if (nl == NULL) {
        return NULL;
    }

    tv.tv_sec = WG_NL_TIMEOUT;
    tv.tv_usec = 0;

    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) != 0
        || setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVTIMEO,
                      &tv, sizeof(tv))
           != 0)
    {
        err = errno;
        mnl_socket_close(nl);
        errno = err;
        return NULL;
    }

    return nl;
}


/*
 * Sends one request and runs the callback over the answers until the ACK,
 * or the end of a dump.  Returns 0 or -errno (the kernel's error).
 */

int
wg_nl_request(struct mnl_socket *nl, struct nlmsghdr *nlh, void *buf,
    size_t size, mnl_cb_t cb, void *data)
{
    int           rc;
    ssize_t       n;
    uint32_t      seq, portid;

    seq = nlh->nlmsg_seq;
    portid = mnl_socket_get_portid(nl);

    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        return -errno;
    }

    for ( ;; ) {
        n = mnl_socket_recvfrom(nl, buf, size);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            return (errno == EAGAIN) ? -ETIMEDOUT : -errno;
        }

        errno = 0;
        rc = mnl_cb_run(buf, (size_t) n, seq, portid, cb, data);

        if (rc < 0) {
            return errno ? -errno : -EPROTO;
        }

        if (rc == MNL_CB_STOP) {
            return 0;
        }
    }
}


static int
wg_rtnl_talk(struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
    int                 rc;
    char               *buf;
    struct mnl_socket  *nl;

    buf = malloc(WG_RTNL_BUF_SIZE);
    if (buf == NULL) {
        return -ENOMEM;
    }

    nl = wg_nl_open(NETLINK_ROUTE);
    if (nl == NULL) {
        rc = -errno;
        free(buf);
        return rc;
    }

    rc = wg_nl_request(nl, nlh, buf, WG_RTNL_BUF_SIZE, cb, data);

    mnl_socket_close(nl);
    free(buf);

    return rc;
}


static struct nlmsghdr *
wg_rtnl_header(char *buf, uint16_t type, uint16_t flags)
{
    struct nlmsghdr  *nlh;

    if (wg_rtnl_seq == 0) {
        wg_rtnl_seq = (uint32_t) time(NULL);
    }

    nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    nlh->nlmsg_seq = ++wg_rtnl_seq;

    return nlh;
}


int
wg_rtnl_link_add(const char *ifname, const char *kind)
{
    char               buf[512];
    struct nlattr     *info;
    struct nlmsghdr   *nlh;
    struct ifinfomsg  *ifi;

    if (!wg_ifname_valid(ifname)) {
        return -EINVAL;
    }

    nlh = wg_rtnl_header(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifinfomsg));
    ifi->ifi_family = AF_UNSPEC;

    if (!mnl_attr_put_strz_check(nlh, sizeof(buf), IFLA_IFNAME, ifname)) {
        return -EMSGSIZE;
    }

    info = mnl_attr_nest_start_check(nlh, sizeof(buf), IFLA_LINKINFO);

    if (info == NULL
        || !mnl_attr_put_strz_check(nlh, sizeof(buf), IFLA_INFO_KIND, kind))
    {
        return -EMSGSIZE;
    }

    mnl_attr_nest_end(nlh, info);

    return wg_rtnl_talk(nlh, NULL, NULL);
}


static int
wg_rtnl_linkinfo_attr(const struct nlattr *attr, void *data)
{
    wg_rtnl_link_t  *link;

    link = data;

    if (mnl_attr_get_type(attr) == IFLA_INFO_KIND
        && mnl_attr_validate(attr, MNL_TYPE_STRING) == 0)
    {
        snprintf(link->kind, sizeof(link->kind), "%s",
                 mnl_attr_get_str(attr));
    }

    return MNL_CB_OK;
}


static int
wg_rtnl_link_attr(const struct nlattr *attr, void *data)
{
    wg_rtnl_link_t  *link;

    link = data;

    switch (mnl_attr_get_type(attr)) {

    case IFLA_IFNAME:
        if (mnl_attr_validate(attr, MNL_TYPE_STRING) == 0) {
            snprintf(link->name, sizeof(link->name), "%s",
                     mnl_attr_get_str(attr));
        }
        break;

    case IFLA_MTU:
        if (mnl_attr_validate(attr, MNL_TYPE_U32) == 0) {
            link->mtu = mnl_attr_get_u32(attr);
        }
        break;

    case IFLA_LINKINFO:
        return mnl_attr_parse_nested(attr, wg_rtnl_linkinfo_attr, link);
    }

    return MNL_CB_OK;
}


static int
wg_rtnl_link_cb(const struct nlmsghdr *nlh, void *data)
{
    char                 *copy, **p;
    size_t                ncap;
    wg_rtnl_link_t        link;
    wg_rtnl_link_ctx_t   *ctx;
    struct ifinfomsg     *ifi;

    ctx = data;

    if (nlh->nlmsg_type != RTM_NEWLINK) {
        return MNL_CB_OK;
    }

    memset(&link, 0, sizeof(wg_rtnl_link_t));

    ifi = mnl_nlmsg_get_payload(nlh);
    link.ifindex = (uint32_t) ifi->ifi_index;
    link.flags = ifi->ifi_flags;

    if (mnl_attr_parse(nlh, sizeof(struct ifinfomsg), wg_rtnl_link_attr,
                       &link)
        != MNL_CB_OK)
    {
        return MNL_CB_ERROR;
    }

    if (ctx->link != NULL) {
        *ctx->link = link;
        return MNL_CB_OK;
    }

    if (ctx->kind == NULL || strcmp(link.kind, ctx->kind) != 0) {
        return MNL_CB_OK;
    }

    if (ctx->n == ctx->cap) {
        ncap = ctx->cap ? ctx->cap * 2 : 16;

        p = realloc(ctx->names, ncap * sizeof(char *));
        if (p == NULL) {
            ctx->error = -ENOMEM;
            return MNL_CB_ERROR;
        }

        ctx->names = p;
        ctx->cap = ncap;
    }

    copy = strdup(link.name);
    if (copy == NULL) {
        ctx->error = -ENOMEM;
        return MNL_CB_ERROR;
    }

    ctx->names[ctx->n++] = copy;

    return MNL_CB_OK;
}


int
wg_rtnl_link_get(const char *ifname, wg_rtnl_link_t *link)
{
    int                  rc;
    char                 buf[512];
    struct nlmsghdr     *nlh;
    struct ifinfomsg    *ifi;
    wg_rtnl_link_ctx_t   ctx;

    if (!wg_ifname_valid(ifname)) {
        return -EINVAL;
    }

    memset(&ctx, 0, sizeof(wg_rtnl_link_ctx_t));
    memset(link, 0, sizeof(wg_rtnl_link_t));
    ctx.link = link;

    nlh = wg_rtnl_header(buf, RTM_GETLINK, 0);
    ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifinfomsg));
    ifi->ifi_family = AF_UNSPEC;

    mnl_attr_put_strz(nlh, IFLA_IFNAME, ifname);

    rc = wg_rtnl_talk(nlh, wg_rtnl_link_cb, &ctx);

    if (rc == 0 && link->ifindex == 0) {
        rc = -ENODEV;
    }

    return rc;
}


int
wg_rtnl_link_list(const char *kind, char ***names, size_t *n)
{
    int                  rc;
    char                 buf[512];
    size_t               i;
    struct nlmsghdr     *nlh;
    struct ifinfomsg    *ifi;
    wg_rtnl_link_ctx_t   ctx;

    memset(&ctx, 0, sizeof(wg_rtnl_link_ctx_t));
    ctx.kind = kind;

    nlh = wg_rtnl_header(buf, RTM_GETLINK, NLM_F_DUMP);
    ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifinfomsg));
    ifi->ifi_family = AF_UNSPEC;

    rc = wg_rtnl_talk(nlh, wg_rtnl_link_cb, &ctx);

    if (rc == 0 && ctx.error != 0) {
        rc = ctx.error;
    }

    if (rc != 0) {
        for (i = 0; i < ctx.n; i++) {
            free(ctx.names[i]);
        }

        free(ctx.names);
        return rc;
    }

    *names = ctx.names;
    *n = ctx.n;

    return 0;
}


/* up: 1 up, 0 down, -1 leave as is; mtu: 0 leaves it */

int
wg_rtnl_link_set(uint32_t ifindex, int up, uint32_t mtu)
{
    char               buf[512];
    struct nlmsghdr   *nlh;
    struct ifinfomsg  *ifi;

    nlh = wg_rtnl_header(buf, RTM_NEWLINK, 0);
    ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifinfomsg));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = (int) ifindex;

    if (up >= 0) {
        ifi->ifi_change = IFF_UP;
        ifi->ifi_flags = up ? IFF_UP : 0;
    }

    if (mtu != 0) {
        mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
    }

    return wg_rtnl_talk(nlh, NULL, NULL);
}


int
wg_rtnl_link_del(uint32_t ifindex)
{
    char               buf[512];
    struct nlmsghdr   *nlh;
    struct ifinfomsg  *ifi;

    nlh = wg_rtnl_header(buf, RTM_DELLINK, 0);
    ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifinfomsg));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = (int) ifindex;

    return wg_rtnl_talk(nlh, NULL, NULL);
}


static int
wg_rtnl_addr_attr(const struct nlattr *attr, void *data)
{
    const struct nlattr  **tb;

    tb = data;

    if (mnl_attr_get_type(attr) == IFA_LOCAL
        || mnl_attr_get_type(attr) == IFA_ADDRESS)
    {
        tb[mnl_attr_get_type(attr)] = attr;
    }

    return MNL_CB_OK;
}


static int
wg_rtnl_addr_cb(const struct nlmsghdr *nlh, void *data)
{
    size_t                 len;
    struct ifaddrmsg      *ifa;
    const struct nlattr   *tb[IFA_MAX + 1], *a;
    wg_rtnl_addr_ctx_t    *ctx;

    ctx = data;

    if (nlh->nlmsg_type != RTM_NEWADDR) {
        return MNL_CB_OK;
    }

    ifa = mnl_nlmsg_get_payload(nlh);

    if (ifa->ifa_index != ctx->ifindex || ifa->ifa_family != ctx->family
        || ctx->n == WG_RTNL_MAX_ADDRS)
    {
        return MNL_CB_OK;
    }

    memset(tb, 0, sizeof(tb));

    if (mnl_attr_parse(nlh, sizeof(struct ifaddrmsg), wg_rtnl_addr_attr, tb)
        != MNL_CB_OK)
    {
        return MNL_CB_ERROR;
    }

    a = tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS];
    len = (ctx->family == AF_INET6) ? 16 : 4;

    if (a == NULL || mnl_attr_get_payload_len(a) != len) {
        return MNL_CB_OK;
    }

    memcpy(ctx->addrs[ctx->n].addr, mnl_attr_get_payload(a), len);
    ctx->addrs[ctx->n].prefixlen = ifa->ifa_prefixlen;
    ctx->n++;

    return MNL_CB_OK;
}


static int
wg_rtnl_addr_put(uint16_t type, uint16_t flags, uint32_t ifindex,
    int family, const void *addr, uint8_t prefixlen)
{
    char               buf[512];
    size_t             len;
    struct nlmsghdr   *nlh;
    struct ifaddrmsg  *ifa;

    len = (family == AF_INET6) ? 16 : 4;

    nlh = wg_rtnl_header(buf, type, flags);
    ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifaddrmsg));
    ifa->ifa_family = (uint8_t) family;
    ifa->ifa_prefixlen = prefixlen;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = ifindex;

    mnl_attr_put(nlh, IFA_LOCAL, len, addr);
    mnl_attr_put(nlh, IFA_ADDRESS, len, addr);

    return wg_rtnl_talk(nlh, NULL, NULL);
}


/*
 * Makes addr/prefixlen the device's only address of its family: other
 * addresses of that family (an old lease) are removed, this one is added
 * or replaced.  Nothing is sent when it is already the only one.
 */

/*
 * An IPv4 address added in the subnet of an existing one becomes its
 * secondary, and deleting the primary deletes its secondaries too unless
 * the device promotes them (off by default; systemd's sysctl defaults turn
 * it on, a bare kernel does not).  Set per device, in its IFLA_AF_SPEC.
 */

static int
wg_rtnl_promote_secondaries(uint32_t ifindex)
{
    char               buf[256];
    struct nlattr     *spec, *inet, *conf;
    struct nlmsghdr   *nlh;
    struct ifinfomsg  *ifi;

    nlh = wg_rtnl_header(buf, RTM_NEWLINK, 0);
    ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifinfomsg));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = (int) ifindex;

    spec = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
    inet = mnl_attr_nest_start(nlh, AF_INET);
    conf = mnl_attr_nest_start(nlh, IFLA_INET_CONF);
    mnl_attr_put_u32(nlh, IPV4_DEVCONF_PROMOTE_SECONDARIES, 1);
    mnl_attr_nest_end(nlh, conf);
    mnl_attr_nest_end(nlh, inet);
    mnl_attr_nest_end(nlh, spec);

    return wg_rtnl_talk(nlh, NULL, NULL);
}


int
wg_rtnl_addr_set(uint32_t ifindex, int family, const void *addr,
    uint8_t prefixlen)
{
    int                  rc, present;
    char                 buf[512];
    size_t               i, len;
    struct nlmsghdr     *nlh;
    struct ifaddrmsg    *ifa;
    wg_rtnl_addr_ctx_t  *ctx;

    len = (family == AF_INET6) ? 16 : 4;

    ctx = calloc(1, sizeof(wg_rtnl_addr_ctx_t));
    if (ctx == NULL) {
        return -ENOMEM;
    }

    ctx->ifindex = ifindex;
    ctx->family = family;

    nlh = wg_rtnl_header(buf, RTM_GETADDR, NLM_F_DUMP);
    ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifaddrmsg));
    ifa->ifa_family = (uint8_t) family;

    rc = wg_rtnl_talk(nlh, wg_rtnl_addr_cb, ctx);
    if (rc != 0) {
        goto done;
    }

    present = 0;

    for (i = 0; i < ctx->n; i++) {
        if (ctx->addrs[i].prefixlen == prefixlen
            && memcmp(ctx->addrs[i].addr, addr, len) == 0)
        {
            present = 1;
        }
    }

    /*
     * The new address first: a device left without an IPv4 address, even
     * for a moment, loses every IPv4 route through it.  It may land as a
     * secondary of an old one, which must then survive the old one.
     */
    if (family == AF_INET && ctx->n > (size_t) present) {
        rc = wg_rtnl_promote_secondaries(ifindex);
        if (rc != 0) {
            goto done;
        }
    }

    if (!present) {
        rc = wg_rtnl_addr_put(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE,
                              ifindex, family, addr, prefixlen);
        if (rc != 0) {
            goto done;
        }
    }

    for (i = 0; i < ctx->n; i++) {
        if (ctx->addrs[i].prefixlen == prefixlen
            && memcmp(ctx->addrs[i].addr, addr, len) == 0)
        {
            continue;
        }

        rc = wg_rtnl_addr_put(RTM_DELADDR, 0, ifindex, family,
                              ctx->addrs[i].addr, ctx->addrs[i].prefixlen);
        if (rc != 0 && rc != -EADDRNOTAVAIL) {
            goto done;
        }
    }

    rc = 0;

done:

    free(ctx);

    return rc;
}


int
wg_rtnl_route_add(uint32_t ifindex, int family, const void *dst,
    uint8_t prefixlen)
{
    char              buf[512];
    struct rtmsg     *rtm;
    struct nlmsghdr  *nlh;

    nlh = wg_rtnl_header(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
    rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(struct rtmsg));
    rtm->rtm_family = (uint8_t) family;
    rtm->rtm_dst_len = prefixlen;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = RTPROT_BOOT;
    rtm->rtm_scope = RT_SCOPE_LINK;
    rtm->rtm_type = RTN_UNICAST;

    mnl_attr_put(nlh, RTA_DST, (family == AF_INET6) ? 16 : 4, dst);
    mnl_attr_put_u32(nlh, RTA_OIF, ifindex);

    return wg_rtnl_talk(nlh, NULL, NULL);
}
