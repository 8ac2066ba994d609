/*
 * wgctl: the backend switch, as wg(8) has it.  A device with a UAPI socket
 * in WG_UAPI_DIR is served by its userspace implementation (uapi.c),
 * any other by the kernel through generic netlink (genl.c); the commands
 * get, set and list devices here and never call a backend themselves.
 */


#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ipc.h"
#include "genl.h"
#include "rtnl.h"
#include "uapi.h"


#define WG_IPC_MAX_DEVICES  65536


static int wg_name_cmp(const void *a, const void *b);
static int wg_list_add(char ***names, size_t *n, size_t *cap,
    const char *name);


wg_backend_e
wg_backend_pick(const char *ifname)
{
    return wg_uapi_exists(ifname) ? WG_BACKEND_UAPI : WG_BACKEND_NETLINK;
}


const char *
wg_backend_name(wg_backend_e backend)
{
    switch (backend) {

    case WG_BACKEND_UAPI:
        return "uapi";

    case WG_BACKEND_NETLINK:
        return "netlink";

    default:
        return "auto";
    }
}


int
wg_backend_parse(const char *text, wg_backend_e *backend)
{
    if (strcmp(text, "uapi") == 0) {
        *backend = WG_BACKEND_UAPI;

    } else if (strcmp(text, "netlink") == 0) {
        *backend = WG_BACKEND_NETLINK;

    } else if (strcmp(text, "auto") == 0) {
        *backend = WG_BACKEND_AUTO;

    } else {
        return -1;
    }

    return 0;
}


int
wg_device_get(const char *ifname, wg_backend_e backend, wg_device_t **out)
{
    if (backend == WG_BACKEND_AUTO) {
        backend = wg_backend_pick(ifname);
    }

    if (backend == WG_BACKEND_UAPI) {
        return wg_uapi_get(ifname, out);
    }

    return wg_genl_get(ifname, out);
}


int
wg_device_set(const wg_device_t *dev, wg_backend_e backend,
    wg_io_stats_t *io)
{
    if (backend == WG_BACKEND_AUTO) {
        backend = wg_backend_pick(dev->name);
    }

    if (backend == WG_BACKEND_UAPI) {
        return wg_uapi_set(dev, io);
    }

    return wg_genl_set(dev, io);
}


static int
wg_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char * const *) a, *(char * const *) b);
}


static int
wg_list_add(char ***names, size_t *n, size_t *cap, const char *name)
{
    char   *copy, **p;
    size_t  i, ncap;

    for (i = 0; i < *n; i++) {
        if (strcmp((*names)[i], name) == 0) {
            return 0;
        }
    }

    if (*n == *cap) {
        if (*n >= WG_IPC_MAX_DEVICES) {
            return -E2BIG;
        }

        ncap = *cap ? *cap * 2 : 8;
        if (ncap > WG_IPC_MAX_DEVICES) {
            ncap = WG_IPC_MAX_DEVICES;
        }

        p = realloc(*names, ncap * sizeof(char *));
        if (p == NULL) {
            return -ENOMEM;
        }

        *names = p;
        *cap = ncap;
    }

    copy = strdup(name);
    if (copy == NULL) {
        return -ENOMEM;
    }

    (*names)[(*n)++] = copy;

    return 0;
}


/* the WireGuard devices of both kinds: UAPI sockets and kernel links */

int
wg_device_list(char ***names, size_t *n)
{
    int             rc;
    DIR            *dir;
    char          **kernel, name[IFNAMSIZ];
    size_t          i, len, nkernel, cap;
    struct dirent  *de;

    *names = NULL;
    *n = 0;
    cap = 0;
    rc = 0;

    dir = opendir(WG_UAPI_DIR);

    if (dir != NULL) {
        while ((de = readdir(dir)) != NULL) {
            len = strlen(de->d_name);

            if (len <= 5 || len - 5 >= IFNAMSIZ
                || strcmp(de->d_name + len - 5, ".sock") != 0)
            {
                continue;
            }

            memcpy(name, de->d_name, len - 5);
            name[len - 5] = '\0';

            if (!wg_ifname_valid(name)) {
                continue;
            }

            rc = wg_list_add(names, n, &cap, name);
            if (rc != 0) {
                break;
            }
        }

        closedir(dir);
    }

    if (rc == 0 && wg_rtnl_link_list("wireguard", &kernel, &nkernel) == 0) {
        for (i = 0; i < nkernel; i++) {
            if (rc == 0) {
                rc = wg_list_add(names, n, &cap, kernel[i]);
            }
        }

        wg_device_list_free(kernel, nkernel);
    }

    if (rc != 0) {
        wg_device_list_free(*names, *n);
        *names = NULL;
        *n = 0;
        return rc;
    }

    if (*n > 1) {
        qsort(*names, *n, sizeof(char *), wg_name_cmp);
    }

    return 0;
}


void
wg_device_list_free(char **names, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(names[i]);
    }

    free(names);
}
