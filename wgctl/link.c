/*
 * wgctl: the device's life, below "wgctl create|addr|down" and "wgctl up":
 * a kernel link of kind "wireguard" or a wireguard-go daemon, created,
 * adopted or removed; its address, MTU and routes.
 */


#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/wait.h>

#include "wgctl.h"
#include "hosts.h"
#include "rtnl.h"
#include "state.h"
#include "uapi.h"


#define WGCTL_MAX_ROUTES  64


static void wg_sleep_ms(long ms);
static int wg_userspace_start(const char *ifname, int verbose);
static int link_ifname(const char *cmd, int argc, char **argv);
static int link_parse_addr(const char *text, int *family, uint8_t *addr,
    uint8_t *prefixlen);


static void
wg_sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;

    nanosleep(&ts, NULL);
}


/*
 * Starts "wireguard-go <ifname>", which creates the tun device and the UAPI
 * socket, then daemonizes: its first process exits once both exist.
 */

static int
wg_userspace_start(const char *ifname, int verbose)
{
    int          fd, status, i;
    pid_t        pid, rc;
    const char  *prog;

    prog = getenv("WGCTL_WIREGUARD_GO");
    if (prog == NULL || prog[0] == '\0') {
        prog = "wireguard-go";
    }

    pid = fork();

    if (pid < 0) {
        return -errno;
    }

    if (pid == 0) {
        /* the daemon inherits these: never hold the caller's pipes open */
        fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, STDIN_FILENO);
            dup2(fd, STDOUT_FILENO);
            if (!verbose) {
                dup2(fd, STDERR_FILENO);
            }
            if (fd > STDERR_FILENO) {
                close(fd);
            }
        }

        execlp(prog, prog, ifname, (char *) NULL);
        _exit(127);
    }

    status = 0;

    for (i = 0; i < 100; i++) {
        rc = waitpid(pid, &status, WNOHANG);

        if (rc == pid) {
            break;
        }

        if (rc < 0) {
            return -errno;
        }

        wg_sleep_ms(100);
    }

    if (i == 100) {
        kill(pid, SIGTERM);
        waitpid(pid, &status, 0);
        return -ETIMEDOUT;
    }

    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "wgctl: \"%s %s\" failed with status %d\n",
                prog, ifname,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return -ECHILD;
    }

    for (i = 0; i < 50; i++) {
        if (wg_uapi_exists(ifname)) {
            return 0;
        }

        wg_sleep_ms(20);
    }

    return -ENOENT;
}


/*
 * Creates the device: a kernel link of kind "wireguard", or, when the
 * kernel lacks that kind (or the UAPI backend is asked for), wireguard-go.
 * An existing WireGuard device of either kind is adopted as it is.
 */

int
wg_link_create(const char *ifname, wg_backend_e backend, int verbose,
    wg_backend_e *used)
{
    int              rc;
    char             path[sizeof(WG_UAPI_DIR) + IFNAMSIZ + 8];
    wg_device_t     *dev;
    wg_rtnl_link_t   link;

    if (wg_uapi_exists(ifname) && backend != WG_BACKEND_NETLINK) {
        rc = wg_uapi_get(ifname, &dev);

        if (rc == 0) {
            wg_device_free(dev);
            *used = WG_BACKEND_UAPI;
            return 0;
        }

        if (rc != -ECONNREFUSED) {
            return rc;
        }

        /* a socket left by a wireguard-go that is gone */
        if (wg_uapi_path(path, sizeof(path), ifname) == 0) {
            unlink(path);
        }
    }

    rc = wg_rtnl_link_get(ifname, &link);

    if (rc == 0) {
        if (strcmp(link.kind, "wireguard") == 0
            && backend != WG_BACKEND_UAPI)
        {
            *used = WG_BACKEND_NETLINK;
            return 0;
        }

        return -EEXIST;
    }

    if (backend != WG_BACKEND_UAPI) {
        rc = wg_rtnl_link_add(ifname, "wireguard");

        if (rc == 0) {
            *used = WG_BACKEND_NETLINK;
            return 0;
        }

        if (backend == WG_BACKEND_NETLINK || rc != -EOPNOTSUPP) {
            return rc == -EOPNOTSUPP ? -EPROTONOSUPPORT : rc;
        }

        if (verbose) {
            fprintf(stderr, "wgctl: no kernel WireGuard, "
                    "starting wireguard-go for \"%s\"\n", ifname);
        }
    }

    rc = wg_userspace_start(ifname, verbose);
    if (rc == 0) {
        *used = WG_BACKEND_UAPI;
    }

    return rc;
}


/*
 * Removes the device.  Deleting the tun link of a wireguard-go device makes
 * wireguard-go exit and remove its socket; wait for that, bounded.
 */

int
wg_link_delete(const char *ifname)
{
    int              rc, i, fd, userspace;
    char             path[sizeof(WG_UAPI_DIR) + IFNAMSIZ + 8];
    wg_rtnl_link_t   link;

    userspace = wg_uapi_exists(ifname);

    rc = wg_rtnl_link_get(ifname, &link);

    if (rc == 0) {
        rc = wg_rtnl_link_del(link.ifindex);
    }

    if (!userspace) {
        return rc;
    }

    if (rc == -ENODEV) {
        fd = wg_uapi_connect(ifname);

        if (fd >= 0) {
            /* alive, so its tun is in another network namespace */
            close(fd);
            return -ENODEV;
        }

        /* stale: nothing listens there any more */
        if (wg_uapi_path(path, sizeof(path), ifname) == 0) {
            unlink(path);
        }

        return 0;
    }

    if (rc != 0) {
        return rc;
    }

    for (i = 0; i < 150 && wg_uapi_exists(ifname); i++) {
        wg_sleep_ms(20);
    }

    if (wg_uapi_exists(ifname)) {
        return -EBUSY;
    }

    return 0;
}


static int
link_ifname(const char *cmd, int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "%s: %s: missing interface name\n", wgctl_prog, cmd);
        return -1;
    }

    if (!wg_ifname_valid(argv[1])) {
        fprintf(stderr, "%s: invalid interface name \"%s\"\n", wgctl_prog,
                argv[1]);
        return -1;
    }

    return 0;
}


/* an interface address: the host part is kept, unlike a route's prefix */

static int
link_parse_addr(const char *text, int *family, uint8_t *addr,
    uint8_t *prefixlen)
{
    char           ip[INET6_ADDRSTRLEN + 1], *end;
    size_t         len;
    unsigned long  n, max;
    const char    *slash;

    slash = strchr(text, '/');
    len = slash ? (size_t) (slash - text) : strlen(text);

    if (len == 0 || len >= sizeof(ip)) {
        return -1;
    }

    memcpy(ip, text, len);
    ip[len] = '\0';

    *family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    max = (*family == AF_INET6) ? 128 : 32;

    if (inet_pton(*family, ip, addr) != 1) {
        return -1;
    }

    n = max;

    if (slash != NULL) {
        if (slash[1] < '0' || slash[1] > '9' || strlen(slash + 1) > 3) {
            return -1;
        }

        n = strtoul(slash + 1, &end, 10);

        if (*end != '\0' || n > max) {
            return -1;
        }
    }

    *prefixlen = (uint8_t) n;

    return 0;
}


int
create_main(int argc, char **argv)
{
    int           rc;
    wg_backend_e  used;

    if (wgctl_is_help(argc, argv)) {
        printf("Usage: %s create <interface> [--backend uapi|netlink]\n",
               wgctl_prog);
        return 0;
    }

    if (link_ifname("create", argc, argv) != 0 || argc != 2) {
        if (argc > 2) {
            fprintf(stderr, "%s: create: unexpected argument \"%s\"\n",
                    wgctl_prog, argv[2]);
        }

        fprintf(stderr, "Usage: %s create <interface>\n", wgctl_prog);
        return 1;
    }

    rc = wg_link_create(argv[1], wgctl_backend, wgctl_verbose, &used);

    if (rc == -EEXIST) {
        fprintf(stderr, "%s: \"%s\" exists and is not a WireGuard device\n",
                wgctl_prog, argv[1]);
        return 1;
    }

    if (rc != 0) {
        fprintf(stderr, "%s: unable to create interface \"%s\": %s\n",
                wgctl_prog, argv[1], wg_strerror(rc));
        return 1;
    }

    if (wgctl_verbose) {
        fprintf(stderr, "%s: %s is up over %s\n", wgctl_prog, argv[1],
                wg_backend_name(used));
    }

    return 0;
}


int
addr_main(int argc, char **argv)
{
    int              i, rc, family, rfamily;
    char            *end;
    size_t           nroutes;
    uint8_t          addr[16], prefixlen;
    unsigned long    mtu;
    wg_allowedip_t   routes[WGCTL_MAX_ROUTES];
    wg_rtnl_link_t   link;

    if (wgctl_is_help(argc, argv)) {
        printf("Usage: %s addr <interface> <ip>[/<prefix>] [--mtu N] "
               "[--route <prefix>]...\n", wgctl_prog);
        return 0;
    }

    if (link_ifname("addr", argc, argv) != 0 || argc < 3) {
        fprintf(stderr, "Usage: %s addr <interface> <ip>[/<prefix>] "
                "[--mtu N] [--route <prefix>]...\n", wgctl_prog);
        return 1;
    }

    if (link_parse_addr(argv[2], &family, addr, &prefixlen) != 0) {
        fprintf(stderr, "%s: invalid address \"%s\"\n", wgctl_prog, argv[2]);
        return 1;
    }

    mtu = 0;
    nroutes = 0;

    for (i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--mtu") == 0 && i + 1 < argc) {
            i++;
            mtu = strtoul(argv[i], &end, 10);

            if (argv[i][0] < '0' || argv[i][0] > '9' || *end != '\0'
                || mtu < 576 || mtu > 65535)
            {
                fprintf(stderr, "%s: invalid MTU \"%s\" (576..65535)\n",
                        wgctl_prog, argv[i]);
                return 1;
            }

        } else if (strcmp(argv[i], "--route") == 0 && i + 1 < argc) {
            i++;

            if (nroutes == WGCTL_MAX_ROUTES) {
                fprintf(stderr, "%s: more than %d routes\n", wgctl_prog,
                        WGCTL_MAX_ROUTES);
                return 1;
            }

            if (wg_allowedip_parse(&routes[nroutes], argv[i]) != 0) {
                fprintf(stderr, "%s: invalid route prefix \"%s\"\n",
                        wgctl_prog, argv[i]);
                return 1;
            }

            nroutes++;

        } else {
            fprintf(stderr, "%s: addr: unexpected argument \"%s\"\n",
                    wgctl_prog, argv[i]);
            return 1;
        }
    }

    rc = wg_rtnl_link_get(argv[1], &link);
    if (rc != 0) {
        fprintf(stderr, "%s: unable to find interface \"%s\": %s\n",
                wgctl_prog, argv[1], wg_strerror(rc));
        return 1;
    }

    rc = wg_rtnl_link_set(link.ifindex, 1,
                          (mtu && mtu != link.mtu) ? (uint32_t) mtu : 0);
    if (rc != 0) {
        fprintf(stderr, "%s: unable to bring \"%s\" up: %s\n", wgctl_prog,
                argv[1], wg_strerror(rc));
        return 1;
    }

    rc = wg_rtnl_addr_set(link.ifindex, family, addr, prefixlen);
    if (rc != 0) {
        fprintf(stderr, "%s: unable to set address \"%s\" on \"%s\": %s\n",
                wgctl_prog, argv[2], argv[1], wg_strerror(rc));
        return 1;
    }

    for (i = 0; (size_t) i < nroutes; i++) {
        rfamily = routes[i].family;

        rc = wg_rtnl_route_add(link.ifindex, rfamily, &routes[i].addr,
                               routes[i].cidr);
        if (rc != 0) {
            fprintf(stderr, "%s: unable to add a route through \"%s\": "
                    "%s\n", wgctl_prog, argv[1], wg_strerror(rc));
            return 1;
        }
    }

    return 0;
}


/*
 * With --state-dir, a running agent is stopped first (SIGTERM, waiting for
 * it to let go of its pid file), and the device and hosts file it recorded
 * are the ones cleaned up when none is named.
 */

int
down_main(int argc, char **argv)
{
    int          i, rc, stopped;
    char         err[256];
    pid_t        pid;
    json_t      *st;
    const char  *ifname, *dir, *hosts;

    if (wgctl_is_help(argc, argv)) {
        printf("Usage: %s down [<interface>] [--state-dir <dir>]\n",
               wgctl_prog);
        return 0;
    }

    ifname = NULL;
    dir = NULL;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc) {
            dir = argv[++i];

        } else if (ifname == NULL && argv[i][0] != '-') {
            ifname = argv[i];

        } else {
            fprintf(stderr, "%s: down: unexpected argument \"%s\"\n",
                    wgctl_prog, argv[i]);
            ifname = NULL;
            dir = NULL;
            break;
        }
    }

    if (ifname == NULL && dir == NULL) {
        fprintf(stderr, "Usage: %s down [<interface>] [--state-dir <dir>]\n",
                wgctl_prog);
        return 1;
    }

    if (ifname != NULL && !wg_ifname_valid(ifname)) {
        fprintf(stderr, "%s: invalid interface name \"%s\"\n", wgctl_prog,
                ifname);
        return 1;
    }

    st = NULL;
    hosts = NULL;
    stopped = 0;

    if (dir != NULL) {
        if (wg_state_status(dir, &st) == 0) {
            hosts = json_string_value(json_object_get(st, "hosts_file"));

            if (ifname == NULL) {
                ifname = json_string_value(json_object_get(st, "interface"));

                if (ifname != NULL && !wg_ifname_valid(ifname)) {
                    ifname = NULL;
                }
            }
        }

        rc = wg_state_stop(dir, 15000, &pid);

        if (rc != 0) {
            fprintf(stderr, "%s: unable to stop the agent of \"%s\": %s\n",
                    wgctl_prog, dir, wg_strerror(rc));
            json_decref(st);
            return 1;
        }

        stopped = (pid > 0);

        if (stopped && wgctl_verbose) {
            fprintf(stderr, "%s: agent %ld stopped\n", wgctl_prog,
                    (long) pid);
        }
    }

    rc = 0;

    if (ifname != NULL) {
        rc = wg_link_delete(ifname);

        if (rc == -ENODEV && wg_uapi_exists(ifname)) {
            fprintf(stderr, "%s: \"%s\" is served by a wireguard-go whose "
                    "tun is in another network namespace\n", wgctl_prog,
                    ifname);
            rc = 1;
            goto done;
        }

        /* an agent run with --down-on-exit removed it itself */
        if (rc == -ENODEV && dir != NULL) {
            rc = 0;
        }

        if (rc != 0) {
            fprintf(stderr, "%s: unable to remove interface \"%s\": %s\n",
                    wgctl_prog, ifname, wg_strerror(rc));
            rc = 1;
            goto done;
        }
    }

    if (hosts != NULL && wg_hosts_update(hosts, NULL, 0, err, sizeof(err)) < 0)
    {
        fprintf(stderr, "%s: %s: %s\n", wgctl_prog, hosts, err);
        rc = 1;
    }

done:

    json_decref(st);

    return rc;
}
