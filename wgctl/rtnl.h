/*
 * wgctl: links, addresses and routes through rtnetlink (libmnl), and the
 * request/answer loop that the generic netlink backend shares.
 */


#ifndef _WG_RTNL_H_INCLUDED_
#define _WG_RTNL_H_INCLUDED_


#include <stdint.h>
#include <libmnl/libmnl.h>
#include <net/if.h>


#define WG_NL_TIMEOUT  5        /* seconds for any netlink answer */


typedef struct {
    char                    name[IFNAMSIZ];
    char                    kind[32];
    uint32_t                ifindex;
    uint32_t                mtu;
    uint32_t                flags;
} wg_rtnl_link_t;


struct mnl_socket *wg_nl_open(int bus);
int wg_nl_request(struct mnl_socket *nl, struct nlmsghdr *nlh,
    void *buf, size_t size, mnl_cb_t cb, void *data);

int wg_rtnl_link_add(const char *ifname, const char *kind);
int wg_rtnl_link_get(const char *ifname, wg_rtnl_link_t *link);
int wg_rtnl_link_set(uint32_t ifindex, int up, uint32_t mtu);
int wg_rtnl_link_del(uint32_t ifindex);
int wg_rtnl_link_list(const char *kind, char ***names, size_t *n);
int wg_rtnl_addr_set(uint32_t ifindex, int family, const void *addr,
    uint8_t prefixlen);
int wg_rtnl_route_add(uint32_t ifindex, int family, const void *dst,
    uint8_t prefixlen);


#endif /* _WG_RTNL_H_INCLUDED_ */
