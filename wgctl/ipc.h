/*
 * wgctl: the backend switch (ipc.c).  Commands get, set and list devices
 * here; it picks the userspace (uapi.h) or kernel (genl.h) backend the
 * way wg(8) does.
 */


#ifndef _WG_IPC_H_INCLUDED_
#define _WG_IPC_H_INCLUDED_


#include "wgdev.h"


typedef enum {
    WG_BACKEND_AUTO = 0,
    WG_BACKEND_UAPI,
    WG_BACKEND_NETLINK
} wg_backend_e;


wg_backend_e wg_backend_pick(const char *ifname);
const char *wg_backend_name(wg_backend_e backend);
int wg_backend_parse(const char *text, wg_backend_e *backend);
int wg_device_get(const char *ifname, wg_backend_e backend,
    wg_device_t **out);
int wg_device_set(const wg_device_t *dev, wg_backend_e backend,
    wg_io_stats_t *io);
int wg_device_list(char ***names, size_t *n);
void wg_device_list_free(char **names, size_t n);


#endif /* _WG_IPC_H_INCLUDED_ */
