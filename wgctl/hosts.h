/*
 * wgctl: the managed block of a hosts file, between "# BEGIN dstack-vpc"
 * and "# END dstack-vpc", one "<ip> <name>.dstack.internal <name>" line
 * per node; every other line is left as it is.
 */


#ifndef _WG_HOSTS_H_INCLUDED_
#define _WG_HOSTS_H_INCLUDED_


#include <stddef.h>


#define WG_HOSTS_BEGIN   "# BEGIN dstack-vpc"
#define WG_HOSTS_END     "# END dstack-vpc"
#define WG_HOSTS_DOMAIN  "dstack.internal"


typedef struct {
    const char              *name;
    const char              *ip;
} wg_host_t;


int wg_hosts_name_valid(const char *name);
int wg_hosts_render(const char *old, size_t len, const wg_host_t *hosts,
    size_t n, char **out, size_t *outlen, char *err, size_t errlen);
int wg_hosts_update(const char *path, const wg_host_t *hosts, size_t n,
    char *err, size_t errlen);


#endif /* _WG_HOSTS_H_INCLUDED_ */
