/*
 * wgctl: the kernel backend (genl.c), WireGuard's generic netlink family.
 * Called by ipc.c only.
 */


#ifndef _WG_GENL_H_INCLUDED_
#define _WG_GENL_H_INCLUDED_


#include "wgdev.h"


/* cursor over a change set while it is split into netlink messages */
typedef struct {
    size_t                  peer;
    size_t                  allowedip;
    unsigned                started:1;
    unsigned                done:1;
} wg_genl_cursor_t;


int wg_genl_get(const char *ifname, wg_device_t **out);
int wg_genl_set(const wg_device_t *dev, wg_io_stats_t *io);
int wg_genl_build_set(const wg_device_t *dev, uint16_t family,
    uint32_t seq, void *buf, size_t size, wg_genl_cursor_t *cur);
size_t wg_genl_message_size(void);


#endif /* _WG_GENL_H_INCLUDED_ */
