/*
 * wgctl up: the node agent's loop.  Makes or loads the node key, registers
 * with a pre-auth key and holds the map stream open (both through the
 * control-plane client, cpclient.c), and keeps the WireGuard device (key,
 * port, peers), its address, MTU and route, and the hosts block in step
 * with every frame, applying only differences.  The device stays up while
 * the server is away; the agent reconnects with capped, jittered
 * exponential backoff and registers again when the server no longer knows
 * its key.
 */


#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <limits.h>
#include <getopt.h>
#include <malloc.h>
#include <grp.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <jansson.h>

#include "up.h"
#include "hosts.h"
#include "rtnl.h"
#include "state.h"


typedef struct up_option_s  up_option_t;

typedef int (*up_option_set_pt)(wg_up_t *up, const up_option_t *opt,
    char *arg);

/* an option of "wgctl up" (up_option_table) */
struct up_option_s {
    const char              *name;
    int                      has_arg;
    up_option_set_pt         set;
    size_t                   offset;        /* of its field in wg_up_t */
    long                     min;           /* a number's range */
    long                     max;
    long                     scale;         /* number -> field */
    const char              *what;          /* "invalid <what> ..." */
    const char              *range;         /* after the value */
};


static void up_usage(FILE *out);
static void up_map_log(void *data, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void up_signal(int signo);
static int up_signals(void);
static void up_drain(void);
static int up_wait(wg_up_t *up, long ms);
static int up_token_valid(const char *s, size_t max, const char *extra);
static int up_options(wg_up_t *up, int argc, char **argv);
static int up_set_string(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_set_flag(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_number(const up_option_t *opt, const char *arg, long *out);
static int up_set_port(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_set_mtu(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_set_ms(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_set_auth_key(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_set_ifname(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_set_endpoint(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_set_route(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_set_path(wg_up_t *up, const up_option_t *opt, char *arg);
static int up_set_relay_socket(wg_up_t *up, const up_option_t *opt,
    char *arg);
static int up_set_relay_group(wg_up_t *up, const up_option_t *opt,
    char *arg);
static int up_options_check(wg_up_t *up);
static int up_mesh_parse(wg_up_t *up);
static int up_read_secret(const char *path, char *buf, size_t size);
static int up_key(wg_up_t *up);
static void up_status_path(json_t *peer, const wg_up_peer_t *rec,
    long long now, time_t wall);
static int up_status_write(wg_up_t *up);
static int up_link(wg_up_t *up, int force);
static void up_forget_device(wg_up_t *up);
static int up_device(wg_up_t *up, int read);
static void up_sync(wg_up_t *up, int force);
static int up_relay_start(wg_up_t *up);
static wg_path_mode_e up_path_mode(wg_up_t *up);
static int up_peer_cmp(const void *a, const void *b);
static int up_dev_peer_cmp(const void *a, const void *b);
static wg_up_peer_t *up_peer_find(wg_up_t *up, const uint8_t *key);
static const wg_peer_t *up_dev_find(const wg_peer_t **sorted, size_t n,
    const uint8_t *key);
static const wg_peer_t **up_dev_index(const wg_device_t *dev);
static int up_on_relay(const wg_up_peer_t *rec, const wg_endpoint_t *ep);
static int up_endpoint_usable(const wg_up_peer_t *rec,
    const wg_endpoint_t *ep);
static int up_endpoint_local(const struct ifaddrs *ifa,
    const wg_endpoint_t *ep);
static int up_paths_update(wg_up_t *up);
static int up_paths_desired(wg_up_t *up, const wg_device_t *actual,
    wg_device_t *desired);
static int up_unsent(wg_up_t *up, const wg_device_t *dev,
    const wg_peer_t **sorted);
static long long up_paths_tick(wg_up_t *up);
static void up_background(wg_up_t *up);
static int up_frame(void *data, const char *frame, size_t len);
static int up_tick(void *data);
static void up_cleanup(wg_up_t *up);


static volatile sig_atomic_t  up_stop;
static volatile sig_atomic_t  up_resync;
static int                    up_wake[2] = { -1, -1 };


static const char  *up_state_names[] = {
    "registering", "connecting", "connected", "refused", "stopped"
};


static void
up_usage(FILE *out)
{
    fprintf(out,
        "Usage: %s up --server <url> --auth-key <key> --hostname <name> "
        "[options]\n"
        "\n"
        "  --server <url>          control plane: the local mesh "
        "(http://127.0.0.1:80)\n"
        "                          with --target-app, or an https:// URL\n"
        "  --target-app <app id>   the VPC server's app id "
        "(x-dstack-target-app)\n"
        "  --auth-key <key>        pre-auth key (or --auth-key-file <file>)\n"
        "  --hostname <name>       this node's name in the VPC\n"
        "  --interface <if>        WireGuard device (default %s)\n"
        "  --listen-port <port>    (default %d)\n"
        "  --endpoint <ip:port>    announced endpoint, repeatable (default: "
        "local\n"
        "                          addresses with the listen port)\n"
        "  --mtu <%d..%d>        (default %d)\n"
        "  --route <prefix>        the VPC prefix (default %s)\n"
        "  --state-dir <dir>       node key, status, pid (default %s)\n"
        "  --hosts-file <file>     (default /etc/hosts); --no-hosts to "
        "leave it\n"
        "  --instance-id <hex>     this CVM's instance id\n"
        "  --node-type <type>      node type for discovery\n"
        "  --ephemeral             removed from the VPC when it leaves\n"
        "  --down-on-exit          remove the device when stopped\n"
        "  --keepalive <s>         the server's keepalive interval (default "
        "%d);\n"
        "                          2x without a frame: reconnect\n"
        "  --max-backoff <s>       cap of the reconnect delay (default %d)\n"
        "  --cacert <file> --cert <file> --key <file>   for https:// "
        "servers\n"
        "\n"
        "  --path auto|direct|relay   how peers are reached (default: the "
        "map's\n"
        "                          WGPath, else auto)\n"
        "  --path-timeout <s>      direct unanswered this long: relay "
        "(default %d)\n"
        "  --direct-retry <s>      on the relay, try direct again after "
        "(default %d,\n"
        "                          doubling to 8x while it fails)\n"
        "  --relay-socket <path>   inbound tunnels from nginx :443 (default "
        "%s)\n"
        "  --relay-group <group>   the socket's group (nginx's)\n"
        "  --relay-keepalive <s>   tunnel keepalive (default %d)\n"
        "  --mesh <ip:port>        outbound tunnels go through it (default: "
        "--server's)\n",
        wgctl_prog, WG_UP_IFNAME, WG_UP_PORT, WG_UP_MTU_MIN, WG_UP_MTU_MAX,
        WG_UP_MTU, WG_UP_PREFIX, WG_STATE_DIR, WG_UP_KEEPALIVE,
        WG_UP_BACKOFF_MAX / 1000, WG_PATH_TIMEOUT / 1000,
        WG_PATH_RETRY / 1000, WG_UP_RELAY_SOCKET, WG_RELAY_KEEPALIVE / 1000);
}


static void
up_map_log(void *data, const char *fmt, ...)
{
    char     msg[512];
    va_list  args;

    va_start(args, fmt);
    vsnprintf(msg, sizeof(msg), fmt, args);
    va_end(args);

    wg_log("map: %s", msg);
}


static void
up_signal(int signo)
{
    int  saved;

    saved = errno;

    if (signo == SIGHUP) {
        up_resync = 1;

    } else if (signo != SIGALRM) {
        up_stop = signo;
    }

    if (write(up_wake[1], "", 1) < 0) {
        /* the pipe is full: a wake-up is pending anyway */
    }

    errno = saved;
}


static int
up_signals(void)
{
    int               i;
    struct sigaction  sa;

    if (pipe(up_wake) != 0) {
        return -errno;
    }

    for (i = 0; i < 2; i++) {
        if (fcntl(up_wake[i], F_SETFD, FD_CLOEXEC) != 0
            || fcntl(up_wake[i], F_SETFL, O_NONBLOCK) != 0)
        {
            return -errno;
        }
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = up_signal;
    sigemptyset(&sa.sa_mask);

    if (sigaction(SIGTERM, &sa, NULL) != 0
        || sigaction(SIGINT, &sa, NULL) != 0
        || sigaction(SIGHUP, &sa, NULL) != 0)
    {
        return -errno;
    }

    /* the probes' wake-ups: no read or write of ours is cut short */
    sa.sa_flags = SA_RESTART;

    if (sigaction(SIGALRM, &sa, NULL) != 0) {
        return -errno;
    }

    sa.sa_flags = 0;

    sa.sa_handler = SIG_IGN;

    if (sigaction(SIGPIPE, &sa, NULL) != 0) {
        return -errno;
    }

    return 0;
}


static void
up_drain(void)
{
    char  buf[64];

    while (read(up_wake[0], buf, sizeof(buf)) > 0) {
        /* void */
    }
}


/* sleeps, unless a signal comes: 0 after the delay, -ECANCELED */

static int
up_wait(wg_up_t *up, long ms)
{
    long long      deadline, now, until;
    struct pollfd  pfd;

    deadline = wg_now_ms() + ms;

    while (!up_stop) {
        /* the paths are watched while the server is away, too */
        up_background(up);

        now = wg_now_ms();

        if (now >= deadline) {
            return 0;
        }

        until = deadline < up->next_path ? deadline : up->next_path;

        if (until < now + 10) {
            until = now + 10;
        }

        pfd.fd = up_wake[0];
        pfd.events = POLLIN;
        pfd.revents = 0;

        (void) poll(&pfd, 1, (int) (until - now));
        up_drain();
    }

    return -ECANCELED;
}


/* [A-Za-z0-9] and the characters of "extra", 1..max */

static int
up_token_valid(const char *s, size_t max, const char *extra)
{
    size_t  i, len;

    len = strlen(s);

    if (len == 0 || len > max) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || strchr(extra, s[i])))
        {
            return 0;
        }
    }

    return 1;
}


static int
up_read_secret(const char *path, char *buf, size_t size)
{
    int      fd;
    size_t   len;
    ssize_t  n;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }

    len = 0;

    while (len < size - 1) {
        n = read(fd, buf + len, size - 1 - len);

        if (n < 0 && errno == EINTR) {
            continue;
        }

        if (n <= 0) {
            break;
        }

        len += (size_t) n;
    }

    close(fd);
    buf[len] = '\0';

    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'
                       || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
    {
        buf[--len] = '\0';
    }

    return 0;
}


/*
 * "wgctl up"'s options: each names the field of wg_up_t it sets and the
 * function that checks and sets it; up_options() walks the table.
 */

static const up_option_t  up_option_table[] = {

    { "server", required_argument, up_set_string,
      offsetof(wg_up_t, server), 0, 0, 0, NULL, NULL },

    { "auth-key", required_argument, up_set_auth_key, 0, 0, 0, 0,
      NULL, NULL },

    { "auth-key-file", required_argument, up_set_string,
      offsetof(wg_up_t, auth_key_file), 0, 0, 0, NULL, NULL },

    { "hostname", required_argument, up_set_string,
      offsetof(wg_up_t, hostname), 0, 0, 0, NULL, NULL },

    { "interface", required_argument, up_set_ifname, 0, 0, 0, 0,
      NULL, NULL },

    { "listen-port", required_argument, up_set_port,
      offsetof(wg_up_t, listen_port), 1, 65535, 1, "listen port", "" },

    { "endpoint", required_argument, up_set_endpoint, 0, 0, 0, 0,
      NULL, NULL },

    { "state-dir", required_argument, up_set_string,
      offsetof(wg_up_t, state_dir), 0, 0, 0, NULL, NULL },

    { "hosts-file", required_argument, up_set_string,
      offsetof(wg_up_t, hosts_file), 0, 0, 0, NULL, NULL },

    { "no-hosts", no_argument, up_set_string,
      offsetof(wg_up_t, hosts_file), 0, 0, 0, NULL, NULL },

    { "target-app", required_argument, up_set_string,
      offsetof(wg_up_t, ctrl.target_app), 0, 0, 0, NULL, NULL },

    { "instance-id", required_argument, up_set_string,
      offsetof(wg_up_t, instance_id), 0, 0, 0, NULL, NULL },

    { "node-type", required_argument, up_set_string,
      offsetof(wg_up_t, node_type), 0, 0, 0, NULL, NULL },

    { "ephemeral", no_argument, up_set_flag,
      offsetof(wg_up_t, ephemeral), 0, 0, 0, NULL, NULL },

    { "down-on-exit", no_argument, up_set_flag,
      offsetof(wg_up_t, down_on_exit), 0, 0, 0, NULL, NULL },

    { "mtu", required_argument, up_set_mtu,
      offsetof(wg_up_t, mtu), WG_UP_MTU_MIN, WG_UP_MTU_MAX, 1,
      "MTU", " (1280..1420)" },

    { "route", required_argument, up_set_route, 0, 0, 0, 0, NULL, NULL },

    { "keepalive", required_argument, up_set_ms,
      offsetof(wg_up_t, silence), 1, 3600, 2 * 1000,
      "keepalive", " (1..3600 seconds)" },

    { "max-backoff", required_argument, up_set_ms,
      offsetof(wg_up_t, backoff_max), 1, 3600, 1000,
      "max backoff", " (1..3600 seconds)" },

    { "cacert", required_argument, up_set_string,
      offsetof(wg_up_t, ctrl.cacert), 0, 0, 0, NULL, NULL },

    { "cert", required_argument, up_set_string,
      offsetof(wg_up_t, ctrl.cert), 0, 0, 0, NULL, NULL },

    { "key", required_argument, up_set_string,
      offsetof(wg_up_t, ctrl.key), 0, 0, 0, NULL, NULL },

    { "path", required_argument, up_set_path, 0, 0, 0, 0, NULL, NULL },

    { "path-timeout", required_argument, up_set_ms,
      offsetof(wg_up_t, path_conf.timeout), 1, 3600, 1000,
      "path timeout", " (1..3600 seconds)" },

    { "direct-retry", required_argument, up_set_ms,
      offsetof(wg_up_t, path_conf.retry), 1, 3600, 1000,
      "direct retry", " (1..3600 seconds)" },

    { "relay-socket", required_argument, up_set_relay_socket, 0, 0, 0, 0,
      NULL, NULL },

    { "relay-group", required_argument, up_set_relay_group, 0, 0, 0, 0,
      NULL, NULL },

    { "relay-keepalive", required_argument, up_set_ms,
      offsetof(wg_up_t, relay_keepalive), 1, 3600, 1000,
      "relay keepalive", " (1..3600 seconds)" },

    { "mesh", required_argument, up_set_string,
      offsetof(wg_up_t, mesh), 0, 0, 0, NULL, NULL }
};

#define UP_NOPTIONS      (sizeof(up_option_table) / sizeof(up_option_t))
#define UP_OPTION_FIRST  256        /* getopt_long()'s values for the table */


static int
up_options(wg_up_t *up, int argc, char **argv)
{
    int                 c, idx;
    size_t              i;
    struct option       opts[UP_NOPTIONS + 1];
    const up_option_t  *opt;

    for (i = 0; i < UP_NOPTIONS; i++) {
        opts[i].name = up_option_table[i].name;
        opts[i].has_arg = up_option_table[i].has_arg;
        opts[i].flag = NULL;
        opts[i].val = UP_OPTION_FIRST + (int) i;
    }

    memset(&opts[UP_NOPTIONS], 0, sizeof(struct option));

    opterr = 0;
    optind = 1;

    while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {

        if (c == ':') {
            fprintf(stderr, "%s: option \"%s\" needs a value\n", wgctl_prog,
                    argv[optind - 1]);
            return -1;
        }

        if (c < UP_OPTION_FIRST) {
            fprintf(stderr, "%s: up: invalid option \"%s\"\n", wgctl_prog,
                    argv[optind - 1]);
            return -1;
        }

        opt = &up_option_table[c - UP_OPTION_FIRST];

        if (opt->set(up, opt, optarg) != 0) {
            return -1;
        }
    }

    if (optind < argc) {
        fprintf(stderr, "%s: up: unexpected argument \"%s\"\n", wgctl_prog,
                argv[optind]);
        return -1;
    }

    return up_options_check(up);
}


/* a field of wg_up_t: the argument itself, or NULL for a no_argument */

static int
up_set_string(wg_up_t *up, const up_option_t *opt, char *arg)
{
    *(const char **) ((char *) up + opt->offset) =
        (opt->has_arg == no_argument) ? NULL : arg;

    return 0;
}


static int
up_set_flag(wg_up_t *up, const up_option_t *opt, char *arg)
{
    *(unsigned *) ((char *) up + opt->offset) = 1;

    return 0;
}


/* a whole number in min..max, or an error naming the option */

static int
up_number(const up_option_t *opt, const char *arg, long *out)
{
    long   n;
    char  *end;

    n = strtol(arg, &end, 10);

    if (arg[0] < '0' || arg[0] > '9' || *end != '\0'
        || n < opt->min || n > opt->max)
    {
        fprintf(stderr, "%s: invalid %s \"%s\"%s\n", wgctl_prog, opt->what,
                arg, opt->range);
        return -1;
    }

    *out = n;

    return 0;
}


static int
up_set_port(wg_up_t *up, const up_option_t *opt, char *arg)
{
    long  n;

    if (up_number(opt, arg, &n) != 0) {
        return -1;
    }

    *(uint16_t *) ((char *) up + opt->offset) = (uint16_t) n;

    return 0;
}


static int
up_set_mtu(wg_up_t *up, const up_option_t *opt, char *arg)
{
    long  n;

    if (up_number(opt, arg, &n) != 0) {
        return -1;
    }

    *(uint32_t *) ((char *) up + opt->offset) = (uint32_t) n;

    return 0;
}


/* seconds, kept as milliseconds times the option's factor */

static int
up_set_ms(wg_up_t *up, const up_option_t *opt, char *arg)
{
    long  n;

    if (up_number(opt, arg, &n) != 0) {
        return -1;
    }

    *(long *) ((char *) up + opt->offset) = n * opt->scale;

    return 0;
}


static int
up_set_auth_key(wg_up_t *up, const up_option_t *opt, char *arg)
{
    free(up->auth_key);
    up->auth_key = strdup(arg);

    /* not for everyone's eyes in /proc/<pid>/cmdline */
    wg_memzero(arg, strlen(arg));

    return (up->auth_key == NULL) ? -1 : 0;
}


static int
up_set_ifname(wg_up_t *up, const up_option_t *opt, char *arg)
{
    if (!wg_ifname_valid(arg)) {
        fprintf(stderr, "%s: invalid interface name \"%s\"\n", wgctl_prog,
                arg);
        return -1;
    }

    snprintf(up->ifname, sizeof(up->ifname), "%s", arg);

    return 0;
}


static int
up_set_endpoint(wg_up_t *up, const up_option_t *opt, char *arg)
{
    if (up->nendpoints == WG_MAP_MAX_ENDPOINTS) {
        fprintf(stderr, "%s: more than %d endpoints\n", wgctl_prog,
                WG_MAP_MAX_ENDPOINTS);
        return -1;
    }

    if (wg_endpoint_parse(&up->endpoints[up->nendpoints], arg) != 0) {
        fprintf(stderr, "%s: invalid endpoint \"%s\" (expected "
                "<ip>:<port>)\n", wgctl_prog, arg);
        return -1;
    }

    up->nendpoints++;

    return 0;
}


static int
up_set_route(wg_up_t *up, const up_option_t *opt, char *arg)
{
    if (wg_allowedip_parse(&up->prefix, arg) != 0
        || up->prefix.family != AF_INET || up->prefix.cidr < 8
        || up->prefix.cidr > 30)
    {
        fprintf(stderr, "%s: invalid route prefix \"%s\" (an IPv4 "
                "prefix, /8../30)\n", wgctl_prog, arg);
        return -1;
    }

    return 0;
}


static int
up_set_path(wg_up_t *up, const up_option_t *opt, char *arg)
{
    if (wg_path_parse(arg, &up->path_mode) != 0) {
        fprintf(stderr, "%s: invalid path \"%s\" (auto, direct or "
                "relay)\n", wgctl_prog, arg);
        return -1;
    }

    up->has_path_mode = 1;

    return 0;
}


static int
up_set_relay_socket(wg_up_t *up, const up_option_t *opt, char *arg)
{
    if (arg[0] != '/' || strlen(arg) >= 108) {
        fprintf(stderr, "%s: invalid relay socket \"%s\" (an absolute "
                "path, under 108 bytes)\n", wgctl_prog, arg);
        return -1;
    }

    up->relay_socket = arg;

    return 0;
}


static int
up_set_relay_group(wg_up_t *up, const up_option_t *opt, char *arg)
{
    struct group  *gr;

    gr = getgrnam(arg);

    if (gr == NULL) {
        fprintf(stderr, "%s: unknown relay group \"%s\"\n", wgctl_prog,
                arg);
        return -1;
    }

    up->relay_gid = (int) gr->gr_gid;

    return 0;
}


/* what one option alone cannot check: the options together */

static int
up_options_check(wg_up_t *up)
{
    char  secret[WG_UP_AUTH_KEY_MAX + 2];

    if (up->auth_key_file != NULL) {
        if (up_read_secret(up->auth_key_file, secret, sizeof(secret)) != 0) {
            fprintf(stderr, "%s: unable to read \"%s\": %s\n", wgctl_prog,
                    up->auth_key_file, strerror(errno));
            wg_memzero(secret, sizeof(secret));
            return -1;
        }

        free(up->auth_key);
        up->auth_key = strdup(secret);
        wg_memzero(secret, sizeof(secret));

        if (up->auth_key == NULL) {
            return -1;
        }
    }

    if (up->server == NULL || up->auth_key == NULL || up->hostname == NULL) {
        fprintf(stderr, "%s: up: --server, --auth-key and --hostname are "
                "required\n", wgctl_prog);
        return -1;
    }

    if ((strncmp(up->server, "http://", 7) != 0
         && strncmp(up->server, "https://", 8) != 0)
        || strlen(up->server) > WG_CTRL_URL_MAX - 64
        || up->server[strlen(up->server) - 1] == '/'
        || strpbrk(up->server, " \t\r\n?#") != NULL)
    {
        fprintf(stderr, "%s: invalid server URL \"%s\" (http:// or "
                "https://, no trailing slash)\n", wgctl_prog, up->server);
        return -1;
    }

    /* checked here, so that the JSON we build needs no escaping */
    if (!up_token_valid(up->auth_key, WG_UP_AUTH_KEY_MAX, "-_.:+/=~")) {
        fprintf(stderr, "%s: invalid auth key (1..%d characters of "
                "[A-Za-z0-9-_.:+/=~])\n", wgctl_prog, WG_UP_AUTH_KEY_MAX);
        return -1;
    }

    if (!up_token_valid(up->hostname, WG_MAP_NAME_MAX, "-_.")) {
        fprintf(stderr, "%s: invalid hostname \"%s\" (1..%d characters of "
                "[A-Za-z0-9-_.])\n", wgctl_prog, up->hostname,
                WG_MAP_NAME_MAX);
        return -1;
    }

    if (up->ctrl.target_app != NULL
        && (strlen(up->ctrl.target_app) != WG_CTRL_APP_ID_LEN
            || !up_token_valid(up->ctrl.target_app, WG_CTRL_APP_ID_LEN, "")
            || strspn(up->ctrl.target_app, "0123456789abcdefABCDEF")
               != WG_CTRL_APP_ID_LEN))
    {
        fprintf(stderr, "%s: invalid target app \"%s\" (40 hex digits)\n",
                wgctl_prog, up->ctrl.target_app);
        return -1;
    }

    if (up->instance_id != NULL
        && (!up_token_valid(up->instance_id, WG_UP_ID_MAX, "")
            || strspn(up->instance_id, "0123456789abcdefABCDEF")
               != strlen(up->instance_id)))
    {
        fprintf(stderr, "%s: invalid instance id \"%s\" (hex)\n",
                wgctl_prog, up->instance_id);
        return -1;
    }

    if (up->node_type != NULL
        && !up_token_valid(up->node_type, WG_MAP_NAME_MAX, "-_."))
    {
        fprintf(stderr, "%s: invalid node type \"%s\" (1..%d characters of "
                "[A-Za-z0-9-_.])\n", wgctl_prog, up->node_type,
                WG_MAP_NAME_MAX);
        return -1;
    }

    return up_mesh_parse(up);
}


/*
 * --mesh <ipv4>:<port>, or the host and port of --server (the local mesh
 * in production).  A server named by a host name leaves the relay off
 * unless --mesh says where the mesh is.
 */

static int
up_mesh_parse(wg_up_t *up)
{
    char           host[256], *end;
    long           port;
    size_t         len;
    const char    *p, *colon, *slash;
    struct in_addr  in;

    if (up->mesh != NULL) {
        p = up->mesh;

    } else {
        p = up->server + (strncmp(up->server, "https://", 8) == 0 ? 8 : 7);
    }

    slash = strchr(p, '/');
    len = slash ? (size_t) (slash - p) : strlen(p);
    colon = memchr(p, ':', len);

    port = (up->mesh == NULL && strncmp(up->server, "https://", 8) == 0)
           ? 443 : 80;

    if (colon != NULL) {
        port = strtol(colon + 1, &end, 10);

        if (colon[1] < '0' || colon[1] > '9' || end != p + len
            || port < 1 || port > 65535)
        {
            port = 0;
        }

        len = (size_t) (colon - p);
    }

    if (len == 0 || len >= sizeof(host) || port == 0
        || (up->mesh != NULL && (colon == NULL || slash != NULL)))
    {
        fprintf(stderr, "%s: invalid mesh \"%s\" (<ipv4>:<port>)\n",
                wgctl_prog, up->mesh ? up->mesh : up->server);
        return -1;
    }

    memcpy(host, p, len);
    host[len] = '\0';

    if (inet_pton(AF_INET, host, &in) != 1) {
        if (up->mesh != NULL) {
            fprintf(stderr, "%s: invalid mesh \"%s\" (<ipv4>:<port>)\n",
                    wgctl_prog, up->mesh);
            return -1;
        }

        up->mesh_host[0] = '\0';
        return 0;
    }

    /* a dotted quad: shorter than INET_ADDRSTRLEN */
    memcpy(up->mesh_host, host, len + 1);
    up->mesh_port = (uint16_t) port;

    return 0;
}


/*
 * The node key: loaded from the state directory, or made and stored there
 * (0600, written beside and renamed into place).  A key file that others
 * may read is refused rather than used.
 */

static int
up_key(wg_up_t *up)
{
    int          rc;
    char         path[4096], b64[WG_KEY_B64_LEN + 16];
    size_t       len;
    struct stat  st;

    rc = wg_state_path(path, sizeof(path), up->state_dir, WG_STATE_KEY);
    if (rc != 0) {
        return rc;
    }

    if (lstat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode) || (st.st_mode & 0077)) {
            wg_log("%s: not a regular file of mode 0600 (mode %04o); "
                   "refusing to use it", path, (unsigned) st.st_mode & 07777);
            return -EPERM;
        }

        rc = up_read_secret(path, b64, sizeof(b64));

        if (rc == 0 && wg_key_from_base64(up->private_key, b64) != 0) {
            wg_log("%s: not a WireGuard private key", path);
            rc = -EINVAL;
        }

        wg_memzero(b64, sizeof(b64));

        if (rc != 0) {
            return rc;
        }

    } else if (errno == ENOENT) {
        if (wg_key_generate(up->private_key) != 0) {
            return -EIO;
        }

        wg_key_to_base64(b64, up->private_key);
        len = strlen(b64);
        b64[len++] = '\n';

        rc = wg_state_write(up->state_dir, WG_STATE_KEY, b64, len, 0600, 1);
        wg_memzero(b64, sizeof(b64));

        if (rc != 0) {
            wg_log("unable to write \"%s\": %s", path, wg_strerror(rc));
            return rc;
        }

        wg_log("new node key in %s", path);

    } else {
        return -errno;
    }

    if (wg_key_public(up->public_key, up->private_key) != 0) {
        return -EINVAL;
    }

    wg_map_key_format(up->node_key, up->public_key);

    return 0;
}


/* --- the status file --------------------------------------------------- */


/*
 * A peer's path as the agent last saw it, and its relay's counters, which
 * only the agent can read ("wgctl status" joins them with the device's)
 */

static void
up_status_path(json_t *peer, const wg_up_peer_t *rec, long long now,
    time_t wall)
{
    char        text[INET6_ADDRSTRLEN + 16];
    time_t      t;
    struct tm   tm;
    const char  *state;

    if (rec == NULL || rec->path.path == WG_PATH_AUTO) {
        json_object_set_new(peer, "path", json_null());
        json_object_set_new(peer, "path_since", json_null());

    } else {
        json_object_set_new(peer, "path",
                            json_string(wg_path_name(rec->path.path)));

        t = wall - (time_t) ((now - rec->path.since) / 1000);
        gmtime_r(&t, &tm);
        strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(peer, "path_since", json_string(text));
    }

    json_object_set_new(peer, "path_switches",
                        json_integer(rec ? rec->path.switches : 0));
    json_object_set_new(peer, "direct_retry",
                        json_integer(rec && rec->path.retry
                                     ? rec->path.retry / 1000 : 0));

    if (rec == NULL || !rec->has_relay) {
        json_object_set_new(peer, "relay_endpoint", json_null());
        json_object_set_new(peer, "relay", json_null());
        return;
    }

    if (inet_ntop(AF_INET, &rec->relay_ep.sin_addr, text, sizeof(text))
        != NULL)
    {
        snprintf(text + strlen(text), sizeof(text) - strlen(text), ":%u",
                 (unsigned) ntohs(rec->relay_ep.sin_port));
        json_object_set_new(peer, "relay_endpoint", json_string(text));
    }

    state = rec->relay.tunnels > 0 ? "up"
            : rec->relay.dialing ? "dialing" : "idle";

    json_object_set_new(peer, "relay",
        json_pack("{s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:s?}",
                  "state", state,
                  "tunnels", (int) rec->relay.tunnels,
                  "rx_bytes", (json_int_t) rec->relay.rx_bytes,
                  "tx_bytes", (json_int_t) rec->relay.tx_bytes,
                  "rx_packets", (json_int_t) rec->relay.rx_packets,
                  "tx_packets", (json_int_t) rec->relay.tx_packets,
                  "drops", (json_int_t) rec->relay.drops,
                  "last_error", rec->relay.last_error[0]
                                ? rec->relay.last_error : NULL));
}



/* append to the status text, growing it by doubling */

static int
up_status_append(char **buf, size_t *len, size_t *cap, const char *s,
    size_t n)
{
    char    *p;
    size_t   want;

    if (*len + n + 1 > *cap) {
        want = *cap ? *cap : 4096;

        while (want < *len + n + 1) {
            want *= 2;
        }

        p = realloc(*buf, want);
        if (p == NULL) {
            return -ENOMEM;
        }

        *buf = p;
        *cap = want;
    }

    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';

    return 0;
}


/*
 * status.json: the node's object, then its peers one at a time, each
 * dumped and freed before the next is built; the text is the one a
 * single json_dumps() of the whole tree gave (the node's keys in
 * insertion order, "peers" last), without a JSON tree of every peer
 * (~1.3 KB of small blocks each, every 2 s: it set the agent's heap size)
 */

static int
up_status_write(wg_up_t *up)
{
    int                   rc;
    char                  b64[WG_KEY_B64_LEN + 1], text[64], fqdn[128];
    char                 *dump, *one;
    size_t                i, j, len, cap, n;
    json_t               *root, *peer, *eps;
    time_t                wall;
    struct tm             tm;
    long long             now;
    const wg_map_node_t  *node;

    root = json_object();

    if (root == NULL) {
        return -ENOMEM;
    }

    wg_key_to_base64(b64, up->public_key);

    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "pid", json_integer(getpid()));
    json_object_set_new(root, "state",
                        json_string(up_state_names[up->state]));
    json_object_set_new(root, "interface", json_string(up->ifname));
    json_object_set_new(root, "hostname", json_string(up->hostname));
    json_object_set_new(root, "public_key", json_string(b64));
    json_object_set_new(root, "node_key", json_string(up->node_key));
    json_object_set_new(root, "server", json_string(up->server));
    json_object_set_new(root, "target_app", up->ctrl.target_app
                                            ? json_string(up->ctrl.target_app)
                                            : json_null());
    json_object_set_new(root, "hosts_file", up->hosts_file
                                            ? json_string(up->hosts_file)
                                            : json_null());
    json_object_set_new(root, "ephemeral", json_boolean(up->ephemeral));

    if (wg_allowedip_format(text, sizeof(text), &up->prefix) == 0) {
        json_object_set_new(root, "prefix", json_string(text));
    }

    if (up->name[0] != '\0') {
        snprintf(fqdn, sizeof(fqdn), "%s.%s", up->name, WG_HOSTS_DOMAIN);
        json_object_set_new(root, "name", json_string(fqdn));

    } else {
        json_object_set_new(root, "name", json_null());
    }

    if (up->address_set
        && inet_ntop(AF_INET, &up->address.addr.ip4, text, sizeof(text))
           != NULL)
    {
        json_object_set_new(root, "address", json_string(text));

    } else {
        json_object_set_new(root, "address", json_null());
    }

    if (up->connected_since) {
        gmtime_r(&up->connected_since, &tm);
        strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(root, "connected_since", json_string(text));

    } else {
        json_object_set_new(root, "connected_since", json_null());
    }

    json_object_set_new(root, "last_error", up->last_error[0]
                                            ? json_string(up->last_error)
                                            : json_null());

    json_object_set_new(root, "path_mode",
                        json_string(wg_path_name(up_path_mode(up))));
    json_object_set_new(root, "relay",
        json_pack("{s:s?,s:b,s:s?,s:s?}",
                  "socket", up->relay_socket,
                  "running", up->relay != NULL,
                  "mesh", up->mesh_host[0] ? up->mesh_host : NULL,
                  "error", up->relay_error[0] ? up->relay_error : NULL));

    now = wg_now_ms();
    wall = time(NULL);

    one = json_dumps(root, JSON_COMPACT);
    json_decref(root);

    if (one == NULL) {
        return -ENOMEM;
    }

    /* the node's object without its closing brace, then "peers" */
    dump = NULL;
    len = 0;
    cap = 0;
    n = strlen(one);

    rc = up_status_append(&dump, &len, &cap, one, n - 1);
    free(one);

    if (rc == 0) {
        rc = up_status_append(&dump, &len, &cap, ",\"peers\":[", 10);
    }

    for (i = 0; rc == 0 && i < up->map.npeers; i++) {
        node = up->map.peers[i];
        peer = json_object();
        eps = json_array();

        if (peer == NULL || eps == NULL) {
            json_decref(peer);
            json_decref(eps);
            continue;
        }

        wg_key_to_base64(b64, node->key);
        snprintf(fqdn, sizeof(fqdn), "%s.%s", node->name, WG_HOSTS_DOMAIN);

        json_object_set_new(peer, "id", json_integer(node->id));
        json_object_set_new(peer, "name", json_string(fqdn));
        json_object_set_new(peer, "address", json_string(node->address));
        json_object_set_new(peer, "public_key", json_string(b64));
        json_object_set_new(peer, "online", json_boolean(node->online));
        json_object_set_new(peer, "last_seen", node->last_seen[0]
                                               ? json_string(node->last_seen)
                                               : json_null());

        for (j = 0; j < node->nendpoints; j++) {
            if (wg_endpoint_format(text, sizeof(text), &node->endpoints[j])
                == 0)
            {
                json_array_append_new(eps, json_string(text));
            }
        }

        json_object_set_new(peer, "endpoints", eps);
        json_object_set_new(peer, "app_id", node->app[0]
                                            ? json_string(node->app)
                                            : json_null());
        json_object_set_new(peer, "instance_id", node->instance[0]
                                                 ? json_string(node->instance)
                                                 : json_null());

        up_status_path(peer, up_peer_find(up, node->key), now, wall);

        one = json_dumps(peer, JSON_COMPACT);
        json_decref(peer);

        if (one == NULL) {
            continue;
        }

        if (len > 0 && dump[len - 1] != '[') {
            rc = up_status_append(&dump, &len, &cap, ",", 1);
        }

        if (rc == 0) {
            rc = up_status_append(&dump, &len, &cap, one, strlen(one));
        }

        free(one);
    }

    if (rc == 0) {
        rc = up_status_append(&dump, &len, &cap, "]}", 2);
    }

    if (rc != 0) {
        free(dump);
        return rc;
    }

    rc = wg_state_write(up->state_dir, WG_STATE_STATUS, dump, len, 0644, 0);
    free(dump);

    up->counters_dirty = 0;
    up->next_status = now + WG_UP_STATUS_EVERY;

    if (rc != 0) {
        wg_log("unable to write %s/%s: %s", up->state_dir, WG_STATE_STATUS,
               wg_strerror(rc));
    }

    up->status_dirty = 0;

    return rc;
}


/* --- the device -------------------------------------------------------- */


/*
 * The link, its MTU, address and route.  A device that went away (a
 * wireguard-go that died) is created again; "force" re-checks address and
 * route, which nothing else would notice were removed.
 */

static int
up_link(wg_up_t *up, int force)
{
    int              rc;
    char             text[64];
    wg_backend_e     used;
    wg_rtnl_link_t   link;
    wg_allowedip_t   want;

    rc = wg_rtnl_link_get(up->ifname, &link);

    if (rc == -ENODEV) {
        rc = wg_link_create(up->ifname, wgctl_backend, wgctl_verbose, &used);

        if (rc != 0) {
            wg_log("unable to create interface \"%s\": %s", up->ifname,
                   wg_strerror(rc));
            return rc;
        }

        wg_log("%s created over %s", up->ifname, wg_backend_name(used));

        rc = wg_rtnl_link_get(up->ifname, &link);
    }

    if (rc != 0) {
        wg_log("unable to find interface \"%s\": %s", up->ifname,
               wg_strerror(rc));
        return rc;
    }

    if (link.ifindex != up->ifindex) {
        up->ifindex = link.ifindex;
        up->address_set = 0;
        up->route_set = 0;
        up_forget_device(up);
    }

    if (!(link.flags & IFF_UP) || link.mtu != up->mtu) {
        rc = wg_rtnl_link_set(link.ifindex, 1,
                              link.mtu != up->mtu ? up->mtu : 0);
        if (rc != 0) {
            wg_log("unable to bring \"%s\" up with MTU %u: %s", up->ifname,
                   up->mtu, wg_strerror(rc));
            return rc;
        }

        /* routes through a link that was down are gone */
        up->route_set = 0;
    }

    if (up->map.has_self) {
        want = up->map.self.addrs[0];

    } else if (up->has_reg_address) {
        want = up->reg_address;

    } else {
        want.family = 0;
    }

    if (want.family == AF_INET
        && (force || !up->address_set
            || wg_allowedip_cmp(&want, &up->address) != 0))
    {
        rc = wg_rtnl_addr_set(link.ifindex, AF_INET, &want.addr.ip4, 32);

        if (rc != 0) {
            wg_log("unable to set the address of \"%s\": %s", up->ifname,
                   wg_strerror(rc));
            return rc;
        }

        if (!up->address_set || wg_allowedip_cmp(&want, &up->address) != 0)
        {
            inet_ntop(AF_INET, &want.addr.ip4, text, sizeof(text));
            wg_log("%s has address %s/32", up->ifname, text);
            up->status_dirty = 1;

            /* the kernel may have dropped it with the old address */
            up->route_set = 0;
        }

        up->address = want;
        up->address_set = 1;
    }

    if (force || !up->route_set) {
        rc = wg_rtnl_route_add(link.ifindex, AF_INET, &up->prefix.addr.ip4,
                               up->prefix.cidr);
        if (rc != 0) {
            wg_log("unable to add the route through \"%s\": %s", up->ifname,
                   wg_strerror(rc));
            return rc;
        }

        up->route_set = 1;
    }

    return 0;
}


static void
up_forget_device(wg_up_t *up)
{
    wg_device_free(up->shadow);
    up->shadow = NULL;
}


/*
 * The WireGuard side.  Before the first full map only the key and port are
 * set: the peers on the device (from before a restart) stay until the map
 * says otherwise, so traffic keeps flowing across an agent restart.
 */

static int
up_device(wg_up_t *up, int read)
{
    int                      rc;
    char                     err[256];
    size_t                   nhosts;
    uint8_t                  clamped[WG_KEY_SIZE];
    wg_host_t               *hosts;
    wg_device_t             *actual, *desired, *changes;
    wg_backend_e             backend;
    wg_io_stats_t            io;
    wg_diff_stats_t          ds;
    wg_map_desired_stats_t   ms;

    backend = wgctl_backend;
    if (backend == WG_BACKEND_AUTO) {
        backend = wg_backend_pick(up->ifname);
    }

    desired = NULL;
    changes = NULL;
    hosts = NULL;

    if (read || up->shadow == NULL) {
        up_forget_device(up);

        rc = wg_device_get(up->ifname, backend, &up->shadow);
        if (rc != 0) {
            up->shadow = NULL;
            wg_log("unable to read interface \"%s\": %s", up->ifname,
                   wg_strerror(rc));
            return rc;
        }
    }

    actual = up->shadow;

    if (!up->map.has_full) {
        wg_key_clamp(clamped, up->private_key);

        changes = wg_device_new(up->ifname);
        if (changes == NULL) {
            rc = -ENOMEM;
            goto done;
        }

        if (!(actual->flags & WG_DEV_HAS_PRIVATE_KEY)
            || memcmp(actual->private_key, clamped, WG_KEY_SIZE) != 0)
        {
            changes->flags |= WG_DEV_HAS_PRIVATE_KEY;
            memcpy(changes->private_key, up->private_key, WG_KEY_SIZE);
        }

        if (actual->listen_port != up->listen_port) {
            changes->flags |= WG_DEV_HAS_LISTEN_PORT;
            changes->listen_port = up->listen_port;
        }

        wg_memzero(clamped, sizeof(clamped));
        rc = 0;

        if (!wg_device_is_noop(changes)) {
            rc = wg_device_set(changes, backend, &io);

            if (rc != 0) {
                wg_log("unable to configure \"%s\": %s", up->ifname,
                       wg_strerror(rc));
                goto done;
            }

            rc = wg_device_apply(actual, changes);
        }

        goto done;
    }

    rc = wg_peermap_desired(&up->map, actual, up->private_key,
                            up->listen_port, up->log_conflicts, &desired,
                            &hosts, &nhosts, &ms);
    if (rc != 0) {
        goto done;
    }

    up->log_conflicts = 0;

    /* each peer's endpoint is its path's, and a roamed one is left alone */
    rc = up_paths_update(up);

    if (rc == 0) {
        rc = up_paths_desired(up, actual, desired);
    }

    if (rc != 0) {
        goto done;
    }

    rc = wg_diff(actual, desired, &changes, &ds);
    if (rc != 0) {
        goto done;
    }

    if (!wg_device_is_noop(changes)) {
        memset(&io, 0, sizeof(io));
        rc = wg_device_set(changes, backend, &io);

        if (rc != 0) {
            wg_log("unable to configure \"%s\": %s", up->ifname,
                   wg_strerror(rc));
            goto done;
        }

        wg_log("%s: %zu added, %zu removed, %zu changed, %zu unchanged "
               "peers%s%s; %zu request%s, %zu bytes over %s", up->ifname,
               ds.added, ds.removed, ds.changed, ds.unchanged,
               ds.private_key ? "; private key set" : "",
               ds.listen_port ? "; listen port set" : "",
               io.requests, io.requests == 1 ? "" : "s", io.bytes,
               wg_backend_name(backend));

        rc = wg_device_apply(actual, changes);
        if (rc != 0) {
            goto done;
        }
    }

    if (up->hosts_file != NULL) {
        err[0] = '\0';
        rc = wg_hosts_update(up->hosts_file, hosts, nhosts, err, sizeof(err));

        /* the VPN works without names: tried again at the next check */
        if (rc < 0) {
            wg_log("%s: %s", up->hosts_file, err);

        } else if (rc > 0) {
            wg_log("%s: %zu names", up->hosts_file, nhosts);
        }

        rc = 0;
    }

done:

    /* after a failure the device is read again next time */
    if (rc != 0) {
        up_forget_device(up);
    }

    wg_device_free(desired);
    wg_device_free(changes);
    free(hosts);

    return rc;
}


static void
up_sync(wg_up_t *up, int force)
{
    int  rc;

    rc = up_link(up, force);

    if (rc == 0) {
        rc = up_device(up, force);
    }

    if (rc != 0) {
        up->next_sync = wg_now_ms() + WG_UP_RETRY;
        return;
    }

    up->dirty = 0;
    up->next_sync = wg_now_ms() + WG_UP_RESYNC;

    if (up->status_dirty) {
        up_status_write(up);
    }
}


/* --- the paths: direct UDP or the relay -------------------------------- */


static int
up_relay_start(wg_up_t *up)
{
    int              rc;
    wg_relay_conf_t  conf;

    if (up->mesh_host[0] == '\0') {
        if (up->relay_error[0] == '\0') {
            wg_log("relay: off: the server \"%s\" is not an IPv4 address; "
                   "--mesh says where the mesh is", up->server);
            snprintf(up->relay_error, sizeof(up->relay_error),
                     "no mesh address (--mesh)");
        }

        up->next_relay = LLONG_MAX;
        return -EINVAL;
    }

    memset(&conf, 0, sizeof(wg_relay_conf_t));
    conf.mesh_host = up->mesh_host;
    conf.mesh_port = up->mesh_port;
    conf.target_port = WG_UP_RELAY_TARGET;
    conf.listen_path = up->relay_socket;
    conf.listen_gid = up->relay_gid;
    memcpy(conf.self_key, up->public_key, WG_KEY_SIZE);
    conf.device_port = up->listen_port;
    conf.keepalive = up->relay_keepalive;
    conf.buffer_max = WG_RELAY_BUFFER;
    conf.log = wg_log;

    rc = wg_relay_start(&up->relay, &conf);

    if (rc != 0) {
        up->relay = NULL;
        up->next_relay = wg_now_ms() + WG_UP_RESYNC;
        snprintf(up->relay_error, sizeof(up->relay_error), "%s: %s",
                 up->relay_socket, wg_strerror(rc));
        wg_log("relay: unable to start on \"%s\": %s; direct paths only, "
               "trying again in %d s", up->relay_socket, wg_strerror(rc),
               WG_UP_RESYNC / 1000);
        up->status_dirty = 1;
        return rc;
    }

    wg_log("relay: tunnels in on %s, out through %s:%u", up->relay_socket,
           up->mesh_host, (unsigned) up->mesh_port);

    up->relay_error[0] = '\0';
    up->status_dirty = 1;

    /* the engine gets its peers with the next sync */
    free(up->relay_peers);
    up->relay_peers = NULL;
    up->nrelay_peers = 0;
    up->dirty = 1;
    up->next_sync = 0;

    return 0;
}


/* --path, else the map's WGPath, else auto */

static wg_path_mode_e
up_path_mode(wg_up_t *up)
{
    if (up->has_path_mode) {
        return up->path_mode;
    }

    switch (up->map.wg_path) {
    case WG_MAP_PATH_DIRECT:
        return WG_PATH_DIRECT;
    case WG_MAP_PATH_RELAY:
        return WG_PATH_RELAY;
    default:
        return WG_PATH_AUTO;
    }
}


static int
up_peer_cmp(const void *a, const void *b)
{
    int                  rc;
    const wg_up_peer_t  *pa, *pb;

    pa = a;
    pb = b;

    rc = memcmp(pa->key, pb->key, WG_KEY_SIZE);

    if (rc != 0) {
        return rc;
    }

    return (pa->id > pb->id) - (pa->id < pb->id);
}


static int
up_dev_peer_cmp(const void *a, const void *b)
{
    const wg_peer_t  *pa, *pb;

    pa = *(const wg_peer_t * const *) a;
    pb = *(const wg_peer_t * const *) b;

    return memcmp(pa->public_key, pb->public_key, WG_KEY_SIZE);
}


static wg_up_peer_t *
up_peer_find(wg_up_t *up, const uint8_t *key)
{
    size_t  lo, hi, mid;
    int     rc;

    lo = 0;
    hi = up->npeers;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = memcmp(up->peers[mid].key, key, WG_KEY_SIZE);

        if (rc == 0) {
            return &up->peers[mid];
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


/* the device's peers sorted by key, for lookups; NULL when none or ENOMEM */

static const wg_peer_t **
up_dev_index(const wg_device_t *dev)
{
    size_t            i;
    const wg_peer_t **sorted;

    if (dev == NULL || dev->npeers == 0) {
        return NULL;
    }

    sorted = malloc(dev->npeers * sizeof(wg_peer_t *));
    if (sorted == NULL) {
        return NULL;
    }

    for (i = 0; i < dev->npeers; i++) {
        sorted[i] = &dev->peers[i];
    }

    qsort(sorted, dev->npeers, sizeof(wg_peer_t *), up_dev_peer_cmp);

    return sorted;
}


static const wg_peer_t *
up_dev_find(const wg_peer_t **sorted, size_t n, const uint8_t *key)
{
    size_t  lo, hi, mid;
    int     rc;

    lo = 0;
    hi = (sorted != NULL) ? n : 0;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = memcmp(sorted[mid]->public_key, key, WG_KEY_SIZE);

        if (rc == 0) {
            return sorted[mid];
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


static int
up_on_relay(const wg_up_peer_t *rec, const wg_endpoint_t *ep)
{
    return rec->has_relay && ep->sa.sa_family == AF_INET
           && ep->sin.sin_port == rec->relay_ep.sin_port
           && ep->sin.sin_addr.s_addr == rec->relay_ep.sin_addr.s_addr;
}


/*
 * An endpoint the device may keep: any but a loopback address that is
 * neither this peer's relay endpoint nor what it advertises (the relay
 * endpoint of an agent that ran before, which nothing listens on now).
 */

static int
up_endpoint_usable(const wg_up_peer_t *rec, const wg_endpoint_t *ep)
{
    if (ep->sa.sa_family == AF_UNSPEC) {
        return 0;
    }

    if (ep->sa.sa_family == AF_INET
        && (ntohl(ep->sin.sin_addr.s_addr) >> 24) == 127
        && !up_on_relay(rec, ep)
        && !(rec->has_direct && wg_endpoint_equal(ep, &rec->direct)))
    {
        return 0;
    }

    return 1;
}


/*
 * An address of this host (or loopback): not a way to reach a peer.
 * Behind user-mode NAT (dstack's VMM) every CVM has the same address, so
 * a peer may well advertise ours.
 */

static int
up_endpoint_local(const struct ifaddrs *ifa, const wg_endpoint_t *ep)
{
    const struct ifaddrs  *p;

    if (ep->sa.sa_family == AF_INET
        && (ntohl(ep->sin.sin_addr.s_addr) >> 24) == 127)
    {
        return 1;
    }

    if (ep->sa.sa_family == AF_INET6
        && IN6_IS_ADDR_LOOPBACK(&ep->sin6.sin6_addr))
    {
        return 1;
    }

    for (p = ifa; p != NULL; p = p->ifa_next) {
        if (p->ifa_addr == NULL || p->ifa_addr->sa_family != ep->sa.sa_family)
        {
            continue;
        }

        if (ep->sa.sa_family == AF_INET
            && ((const struct sockaddr_in *) p->ifa_addr)->sin_addr.s_addr
               == ep->sin.sin_addr.s_addr)
        {
            return 1;
        }

        if (ep->sa.sa_family == AF_INET6
            && memcmp(&((const struct sockaddr_in6 *) p->ifa_addr)->sin6_addr,
                      &ep->sin6.sin6_addr, sizeof(struct in6_addr)) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * After a map change: the peer records follow the map (a record, with its
 * path, survives as long as its key stays), and the relay engine gets the
 * peers it may tunnel to: those with an AppID, one per key (the lowest id,
 * as on the device).
 */

static int
up_paths_update(wg_up_t *up)
{
    int                   rc;
    size_t                i, j, n, nr;
    wg_up_peer_t         *recs, *old;
    struct ifaddrs       *ifa;
    wg_relay_peer_t      *rps;
    const wg_map_node_t  *node;

    n = up->map.npeers;

    if (getifaddrs(&ifa) != 0) {
        ifa = NULL;
    }

    recs = calloc(n + 1, sizeof(wg_up_peer_t));
    rps = calloc(n + 1, sizeof(wg_relay_peer_t));

    if (recs == NULL || rps == NULL) {
        free(recs);
        free(rps);

        if (ifa != NULL) {
            freeifaddrs(ifa);
        }

        return -ENOMEM;
    }

    for (i = 0; i < n; i++) {
        node = up->map.peers[i];

        old = up_peer_find(up, node->key);

        if (old != NULL) {
            recs[i] = *old;
        }

        memcpy(recs[i].key, node->key, WG_KEY_SIZE);
        recs[i].id = node->id;
        recs[i].node = i;
        snprintf(recs[i].name, sizeof(recs[i].name), "%s", node->name);

        /* the first advertised endpoint that is not this host's */
        recs[i].has_direct = 0;

        for (j = 0; j < node->nendpoints; j++) {
            if (!up_endpoint_local(ifa, &node->endpoints[j])) {
                recs[i].direct = node->endpoints[j];
                recs[i].has_direct = 1;
                break;
            }
        }

        /* an AppID is what the relay needs to reach it */
        recs[i].has_relay = (node->app[0] != '\0');
    }

    if (ifa != NULL) {
        freeifaddrs(ifa);
    }

    qsort(recs, n, sizeof(wg_up_peer_t), up_peer_cmp);

    /* one record per key, the lowest id */
    for (i = 0, nr = 0; i < n; i++) {
        if (nr > 0
            && memcmp(recs[nr - 1].key, recs[i].key, WG_KEY_SIZE) == 0)
        {
            continue;
        }

        recs[nr++] = recs[i];
    }

    free(up->peers);
    up->peers = recs;
    up->npeers = nr;

    /* the relay's table, in the same order */
    for (i = 0, n = 0; i < nr; i++) {
        if (!recs[i].has_relay) {
            continue;
        }

        node = up->map.peers[recs[i].node];

        memcpy(rps[n].key, node->key, WG_KEY_SIZE);
        snprintf(rps[n].app, sizeof(rps[n].app), "%s", node->app);
        snprintf(rps[n].instance, sizeof(rps[n].instance), "%s",
                 node->instance);
        n++;
    }

    if (up->relay != NULL
        && (n != up->nrelay_peers
            || (n > 0
                && memcmp(rps, up->relay_peers, n * sizeof(wg_relay_peer_t))
                   != 0)))
    {
        rc = wg_relay_set_peers(up->relay, rps, n);

        if (rc != 0) {
            wg_log("relay: unable to set %zu peers: %s", n, wg_strerror(rc));
            free(rps);
            rps = NULL;
            n = 0;
        }

        free(up->relay_peers);
        up->relay_peers = rps;
        up->nrelay_peers = n;
        rps = NULL;
    }

    free(rps);

    for (i = 0; i < nr; i++) {
        if (!recs[i].has_relay || up->relay == NULL
            || wg_relay_endpoint(up->relay, recs[i].key, &recs[i].relay_ep)
               != 0)
        {
            recs[i].has_relay = 0;
            memset(&recs[i].relay_ep, 0, sizeof(struct sockaddr_in));
        }
    }

    return 0;
}


/*
 * The endpoint each desired peer gets.  A usable endpoint on the device is
 * never replaced here — it is the path the device took, roaming included;
 * only up_paths_tick() changes paths.  A peer without one gets its
 * path's: the relay endpoint when forced there or when it advertises
 * nothing, else its first advertised endpoint.  Peers the relay cannot
 * reach keep the map's choice (wg_peermap_desired()).
 */

static int
up_paths_desired(wg_up_t *up, const wg_device_t *actual,
    wg_device_t *desired)
{
    size_t               i;
    wg_peer_t           *peer;
    wg_up_peer_t        *rec;
    wg_path_mode_e       mode;
    const wg_peer_t     *wp, **sorted;

    mode = up_path_mode(up);
    sorted = up_dev_index(actual);

    if (sorted == NULL && actual != NULL && actual->npeers > 0) {
        return -ENOMEM;
    }

    for (i = 0; i < desired->npeers; i++) {
        peer = &desired->peers[i];
        rec = up_peer_find(up, peer->public_key);

        if (rec == NULL || !rec->has_relay) {
            continue;
        }

        wp = up_dev_find(sorted, actual ? actual->npeers : 0,
                         peer->public_key);

        if (wp != NULL && up_endpoint_usable(rec, &wp->endpoint)) {
            memset(&peer->endpoint, 0, sizeof(wg_endpoint_t));
            continue;
        }

        if (mode == WG_PATH_RELAY || (!rec->has_direct
                                      && mode != WG_PATH_DIRECT))
        {
            memset(&peer->endpoint, 0, sizeof(wg_endpoint_t));
            peer->endpoint.sin = rec->relay_ep;

        } else if (rec->has_direct) {
            peer->endpoint = rec->direct;

        } else {
            memset(&peer->endpoint, 0, sizeof(wg_endpoint_t));
        }
    }

    free(sorted);

    return 0;
}


/*
 * Whether the device took packets (the interface's tx counter) while no
 * direct peer's counter shows bytes sent: WireGuard's sends fail, as they
 * do when a firewall on this host drops them, and it counts nothing.
 */

static int
up_unsent(wg_up_t *up, const wg_device_t *dev, const wg_peer_t **sorted)
{
    int                  unsent;
    char                 path[128], buf[32];
    size_t               i;
    FILE                *f;
    uint64_t             if_tx, tx;
    const wg_peer_t     *wp;
    const wg_up_peer_t  *rec;

    snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/tx_packets",
             up->ifname);

    f = fopen(path, "re");
    if (f == NULL) {
        return 0;
    }

    if_tx = (fgets(buf, sizeof(buf), f) != NULL)
            ? strtoull(buf, NULL, 10) : 0;
    fclose(f);

    tx = 0;

    for (i = 0; i < up->npeers; i++) {
        rec = &up->peers[i];
        wp = up_dev_find(sorted, dev->npeers, rec->key);

        if (wp != NULL && !up_on_relay(rec, &wp->endpoint)) {
            tx += wp->tx_bytes;
        }
    }

    unsent = (up->if_tx != 0 && if_tx > up->if_tx && tx == up->direct_tx);

    up->if_tx = if_tx;
    up->direct_tx = tx;

    return unsent;
}


/*
 * Once a second: each peer's endpoint and counters from the device, its
 * relay counters, one step of its path machine (path.c) and what that
 * asks for.  A path change also sets the keepalive to 0 and back, which
 * makes WireGuard send one at once on the new path: the peer's device
 * roams to it without waiting for traffic.
 */

static long long
up_paths_tick(wg_up_t *up)
{
    int                rc, unsent;
    char               text[INET6_ADDRSTRLEN + 16];
    size_t             i, nch;
    wg_peer_t         *ch;
    wg_device_t       *dev, *changes, *kicks;
    wg_up_peer_t      *rec;
    wg_backend_e       backend;
    wg_io_stats_t      io;
    wg_path_obs_t      obs;
    wg_path_mode_e     mode, before;
    wg_path_action_e   a;
    long long          next;
    const wg_peer_t   *wp, **sorted;
    wg_relay_stats_t   st;

    next = wg_now_ms() + WG_UP_PATH_TICK;

    if (!up->map.has_full || up->dirty || up->npeers == 0) {
        return next;
    }

    backend = wgctl_backend;
    if (backend == WG_BACKEND_AUTO) {
        backend = wg_backend_pick(up->ifname);
    }

    rc = wg_device_get(up->ifname, backend, &dev);
    if (rc != 0) {
        return next;
    }

    /* a fresh read is a better shadow than the old one */
    up_forget_device(up);
    up->shadow = dev;

    sorted = up_dev_index(dev);
    changes = wg_device_new(up->ifname);
    kicks = wg_device_new(up->ifname);

    if ((sorted == NULL && dev->npeers > 0) || changes == NULL
        || kicks == NULL)
    {
        goto done;
    }

    mode = up_path_mode(up);
    unsent = up_unsent(up, dev, sorted);
    nch = 0;

    for (i = 0; i < up->npeers; i++) {
        rec = &up->peers[i];
        wp = up_dev_find(sorted, dev->npeers, rec->key);

        if (wp == NULL) {
            continue;
        }

        memset(&st, 0, sizeof(wg_relay_stats_t));

        if (rec->has_relay && up->relay != NULL
            && wg_relay_stats(up->relay, rec->key, &st) == 0)
        {
            if (memcmp(&st, &rec->relay, sizeof(st)) != 0) {
                up->counters_dirty = 1;
            }

            rec->relay = st;
        }

        memset(&obs, 0, sizeof(wg_path_obs_t));
        obs.now = wg_now_ms();
        obs.rx_bytes = wp->rx_bytes;
        obs.tx_bytes = wp->tx_bytes;
        obs.relay_rx = st.rx_bytes;
        obs.relay_tx = st.tx_bytes;
        obs.has_direct = rec->has_direct;
        obs.has_relay = rec->has_relay;
        obs.on_relay = up_on_relay(rec, &wp->endpoint);
        obs.has_endpoint = up_endpoint_usable(rec, &wp->endpoint);
        obs.unsent = unsent;

        if (obs.rx_bytes != rec->path.direct_rx + st.rx_bytes
            || obs.tx_bytes != rec->path.direct_tx + st.tx_bytes)
        {
            up->counters_dirty = 1;
        }

        before = rec->path.path;
        a = wg_path_step(&rec->path, &up->path_conf, mode, &obs);

        if (a != WG_PATH_KEEP) {
            ch = wg_device_add_peer(changes, rec->key);

            if (ch == NULL || wg_device_add_peer(kicks, rec->key) == NULL) {
                goto done;
            }

            if (a == WG_PATH_SET_RELAY) {
                ch->endpoint.sin = rec->relay_ep;

            } else {
                ch->endpoint = rec->direct;
            }

            ch->flags = WG_PEER_HAS_KEEPALIVE;
            ch->keepalive = 0;

            ch = &kicks->peers[kicks->npeers - 1];
            ch->flags = WG_PEER_HAS_KEEPALIVE;
            ch->keepalive = WG_MAP_KEEPALIVE;
            nch++;
        }

        /* an event that repeats (insisting on direct) is logged once */
        if (rec->path.event != NULL
            && (rec->path.event != rec->logged || rec->path.path != before))
        {
            if (a == WG_PATH_SET_RELAY) {
                wg_endpoint_format(text, sizeof(text),
                                   &changes->peers[changes->npeers - 1]
                                    .endpoint);

            } else if (a == WG_PATH_SET_DIRECT || !obs.on_relay) {
                wg_endpoint_format(text, sizeof(text),
                                   a == WG_PATH_SET_DIRECT ? &rec->direct
                                                           : &wp->endpoint);
            } else {
                text[0] = '\0';
            }

            wg_log("path: %s.%s: %s%s%s", rec->name, WG_HOSTS_DOMAIN,
                   rec->path.event, text[0] ? " " : "", text);
        }

        if (rec->path.event != NULL) {
            rec->logged = rec->path.event;
        }

        if (rec->path.path != before || rec->path.event != NULL) {
            up->status_dirty = 1;
        }

        /* a probe is looked at again after a round trip, not a second */
        if (rec->path.probe != 0
            && rec->path.probe + WG_PATH_PROBE_WAIT < next)
        {
            next = rec->path.probe + WG_PATH_PROBE_WAIT;
        }
    }

    if (nch == 0) {
        goto done;
    }

    memset(&io, 0, sizeof(io));
    rc = wg_device_set(changes, backend, &io);

    if (rc == 0) {
        rc = wg_device_set(kicks, backend, &io);
    }

    if (rc != 0) {
        wg_log("path: unable to set %zu endpoint%s on \"%s\": %s", nch,
               nch == 1 ? "" : "s", up->ifname, wg_strerror(rc));
        up_forget_device(up);
        goto done;
    }

    if (wg_device_apply(up->shadow, changes) != 0
        || wg_device_apply(up->shadow, kicks) != 0)
    {
        up_forget_device(up);
    }

done:

    free(sorted);
    wg_device_free(changes);
    wg_device_free(kicks);

    return next;
}


/* what runs whether or not a request is in flight */

static void
up_background(wg_up_t *up)
{
    long long  now;

    now = wg_now_ms();

    if (up->relay == NULL && up->relay_socket != NULL
        && now >= up->next_relay)
    {
        up_relay_start(up);
    }

    /* a poll that ends a few ms early does not skip a whole tick */
    if (now + 20 >= up->next_path) {
        up->next_path = up_paths_tick(up);

        /*
         * a probe wants a look sooner than the control plane's requests
         * wake up (once a second): SIGALRM wakes them through the pipe
         */
        if (up->next_path - now < WG_UP_PATH_TICK) {
            struct itimerval  it;

            memset(&it, 0, sizeof(it));
            it.it_value.tv_sec = 0;
            it.it_value.tv_usec = (suseconds_t) ((up->next_path > now
                                                  ? up->next_path - now : 1)
                                                 * 1000);
            (void) setitimer(ITIMER_REAL, &it, NULL);
        }
    }

    if (up->status_dirty
        || (up->counters_dirty && now >= up->next_status))
    {
        up_status_write(up);
    }
}


static int
up_frame(void *data, const char *frame, size_t len)
{
    int               rc;
    char              err[256];
    wg_up_t          *up;
    wg_map_result_t   res;

    up = data;

    rc = wg_peermap_apply(&up->map, frame, len, &res, err, sizeof(err));

    if (rc != 0) {
        wg_log("map stream: %s; reconnecting", err);
        snprintf(up->last_error, sizeof(up->last_error), "%s", err);
        return rc;
    }

    if (up->state != WG_UP_CONNECTED && !res.full) {
        wg_log("map stream: the first frame is not a full map; "
               "reconnecting");
        snprintf(up->last_error, sizeof(up->last_error),
                 "first frame not a full map");
        return -EPROTO;
    }

    up->last_frame = wg_now_ms();

    if (res.full) {
        if (up->state != WG_UP_CONNECTED) {
            up->state = WG_UP_CONNECTED;
            up->connected_since = time(NULL);
            up->last_error[0] = '\0';
            up->backoff = 0;
        }

        wg_log("map: full, %zu peers (%zu added, %zu changed, %zu removed, "
               "%zu skipped)", up->map.npeers, res.added, res.changed,
               res.removed, res.skipped);

        up->dirty = 1;
        up->log_conflicts = 1;
        up->status_dirty = 1;

        /* a new stream: compare with the device itself once */
        up_forget_device(up);

        /*
         * the full map's JSON tree (~2 KB per peer, small blocks among
         * the kept ones) is freed: give its pages back
         */
        malloc_trim(0);

    } else if (res.added || res.changed || res.removed || res.patched
               || res.self)
    {
        wg_log("map: %zu added, %zu changed, %zu removed, %zu patched%s",
               res.added, res.changed, res.removed, res.patched,
               res.self ? ", this node changed" : "");

        up->dirty = 1;
        up->log_conflicts = 1;
        up->status_dirty = 1;
    }

    if (res.self && up->map.has_self
        && strcmp(up->name, up->map.self.name) != 0)
    {
        snprintf(up->name, sizeof(up->name), "%s", up->map.self.name);
    }

    /* applied now, not at the next tick: a burst is one sync anyway */
    if (up->dirty) {
        up->next_sync = 0;
    }

    return 0;
}


/* between waits: signals, the stream's silence, device work */

static int
up_tick(void *data)
{
    wg_up_t    *up;
    long long   now;

    up = data;

    up_drain();

    if (up_stop) {
        return -ECANCELED;
    }

    now = wg_now_ms();

    /* SIGHUP: check and repair the device now */
    if (up_resync) {
        up_resync = 0;
        wg_log("SIGHUP: checking the device");
        up->next_sync = 0;
    }

    if (up->streaming && now - up->last_frame > up->silence) {
        wg_log("map stream: no frame for %lld ms; reconnecting",
               now - up->last_frame);
        snprintf(up->last_error, sizeof(up->last_error),
                 "map stream silent for %lld ms", now - up->last_frame);
        return -ETIMEDOUT;
    }

    if (now >= up->next_sync) {
        up_sync(up, !up->dirty);
    }

    up_background(up);

    return 0;
}


static void
up_cleanup(wg_up_t *up)
{
    if (up->auth_key != NULL) {
        wg_memzero(up->auth_key, strlen(up->auth_key));
        free(up->auth_key);
        up->auth_key = NULL;
    }

    wg_memzero(up->private_key, sizeof(up->private_key));

    if (up->relay != NULL) {
        wg_relay_stop(up->relay);
        up->relay = NULL;
    }

    free(up->relay_peers);
    up->relay_peers = NULL;
    free(up->peers);
    up->peers = NULL;

    wg_peermap_free(&up->map);
    up_forget_device(up);

    if (up->pid_fd >= 0) {
        wg_state_unlock(up->state_dir, up->pid_fd);
        up->pid_fd = -1;
    }

    if (up_wake[0] >= 0) {
        close(up_wake[0]);
        close(up_wake[1]);
        up_wake[0] = -1;
        up_wake[1] = -1;
    }
}


int
up_main(int argc, char **argv)
{
    int            rc, ret;
    long           delay;
    pid_t          holder;
    wg_up_t        up;
    wg_backend_e   used;

    if (wgctl_is_help(argc, argv)) {
        up_usage(stdout);
        return 0;
    }

    /*
     * a fixed threshold (glibc raises it to the largest block freed, up
     * to 32 MB): map frames, status texts and device dumps of 10k peers
     * stay separate mappings, given back whole when freed
     */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);

    memset(&up, 0, sizeof(wg_up_t));
    snprintf(up.ifname, sizeof(up.ifname), "%s", WG_UP_IFNAME);
    up.state_dir = WG_STATE_DIR;
    up.hosts_file = "/etc/hosts";
    up.listen_port = WG_UP_PORT;
    up.mtu = WG_UP_MTU;
    up.silence = 2 * WG_UP_KEEPALIVE * 1000;
    up.backoff_max = WG_UP_BACKOFF_MAX;
    up.ctrl.connect_timeout = WG_UP_CONNECT_TIMEOUT;
    up.pid_fd = -1;
    up.relay_socket = WG_UP_RELAY_SOCKET;
    up.relay_gid = -1;
    up.relay_keepalive = WG_RELAY_KEEPALIVE;
    up.path_conf.timeout = WG_PATH_TIMEOUT;
    up.path_conf.retry = WG_PATH_RETRY;
    wg_allowedip_parse(&up.prefix, WG_UP_PREFIX);

    if (up_options(&up, argc, argv) != 0) {
        up_usage(stderr);
        up_cleanup(&up);
        return 1;
    }

    up.ctrl.server = up.server;
    ret = 1;

    if (mkdir(up.state_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: unable to create \"%s\": %s\n", wgctl_prog,
                up.state_dir, strerror(errno));
        goto done;
    }

    rc = wg_state_lock(up.state_dir, &up.pid_fd, &holder);

    if (rc == -EBUSY) {
        fprintf(stderr, "%s: an agent (pid %ld) already runs on \"%s\"\n",
                wgctl_prog, (long) holder, up.state_dir);
        goto done;
    }

    if (rc != 0) {
        fprintf(stderr, "%s: unable to lock \"%s/%s\": %s\n", wgctl_prog,
                up.state_dir, WG_STATE_PID, wg_strerror(rc));
        goto done;
    }

    if (up_key(&up) != 0 || up_signals() != 0 || wg_ctrl_init() != 0) {
        goto done;
    }

    /* what the control-plane client calls back while it waits */
    up.ops.frame = up_frame;
    up.ops.tick = up_tick;
    up.ops.data = &up;
    up.ops.wake_fd = up_wake[0];

    wg_peermap_init(&up.map, &up.prefix, up.public_key, up_map_log, NULL);

    rc = wg_link_create(up.ifname, wgctl_backend, wgctl_verbose, &used);

    if (rc != 0) {
        wg_log("unable to create interface \"%s\": %s", up.ifname,
               rc == -EEXIST ? "it exists and is not a WireGuard device"
                             : wg_strerror(rc));
        wg_ctrl_cleanup();
        goto done;
    }

    wg_log("%s over %s, node key %s", up.ifname, wg_backend_name(used),
           up.node_key);

    up_sync(&up, 1);
    up_relay_start(&up);
    up_status_write(&up);

    while (!up_stop) {

        if (!up.registered) {
            rc = cp_register(&up);

            if (rc == -ECANCELED) {
                break;
            }

            if (rc == -EACCES || rc == -EINVAL) {
                up.state = WG_UP_REFUSED;
                up_status_write(&up);

                if (!up.ever_registered) {
                    wg_log("giving up: the registration was refused");
                    wg_ctrl_cleanup();
                    goto done;
                }
            }

            if (rc != 0) {
                up_status_write(&up);
                delay = cp_backoff(&up);
                wg_log("register: again in %ld ms", delay);
                up_wait(&up, delay);
                continue;
            }

            up_sync(&up, 0);
            up_status_write(&up);
        }

        rc = cp_stream(&up);

        if (rc == -ECANCELED) {
            break;
        }

        if (rc == -EACCES) {
            up.registered = 0;
            continue;
        }

        up_status_write(&up);

        if (up_stop) {
            break;
        }

        delay = cp_backoff(&up);
        wg_log("map: reconnecting in %ld ms", delay);
        up_wait(&up, delay);
    }

    wg_log("stopping (signal %d)", (int) up_stop);

    if (up.ephemeral && up.ever_registered) {
        cp_logout(&up);
    }

    if (up.down_on_exit) {
        char  err[256];

        rc = wg_link_delete(up.ifname);
        if (rc != 0 && rc != -ENODEV) {
            wg_log("unable to remove \"%s\": %s", up.ifname,
                   wg_strerror(rc));
        }

        if (up.hosts_file != NULL
            && wg_hosts_update(up.hosts_file, NULL, 0, err, sizeof(err)) < 0)
        {
            wg_log("%s: %s", up.hosts_file, err);
        }
    }

    up.state = WG_UP_STOPPED;
    up.connected_since = 0;
    up_status_write(&up);

    wg_ctrl_cleanup();
    ret = 0;

done:

    up_cleanup(&up);

    return ret;
}
