/*
 * wgctl: the userspace backend (uapi.c), the UAPI text protocol on a
 * socket in WG_UAPI_DIR.  Called by ipc.c, and by link.c for the life of a
 * wireguard-go device.
 */


#ifndef _WG_UAPI_H_INCLUDED_
#define _WG_UAPI_H_INCLUDED_


#include "wgdev.h"


#define WG_UAPI_DIR                 "/var/run/wireguard"


int wg_uapi_get(const char *ifname, wg_device_t **out);
int wg_uapi_set(const wg_device_t *dev, wg_io_stats_t *io);
int wg_uapi_build_set(const wg_device_t *dev, char **out, size_t *len);
int wg_uapi_parse_get(wg_device_t *dev, char *text, size_t len);
int wg_uapi_path(char *buf, size_t size, const char *ifname);
int wg_uapi_exists(const char *ifname);
int wg_uapi_connect(const char *ifname);


#endif /* _WG_UAPI_H_INCLUDED_ */
