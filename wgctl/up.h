/*
 * wgctl up: the node agent's state, shared by the agent loop (up.c) and
 * its control-plane client (cpclient.c).
 */


#ifndef _WG_UP_H_INCLUDED_
#define _WG_UP_H_INCLUDED_


#include <arpa/inet.h>
#include <jansson.h>

#include "wgctl.h"
#include "ctrl.h"
#include "path.h"
#include "peermap.h"
#include "relay.h"


#define WG_UP_IFNAME            "dstack0"
#define WG_UP_PORT              41641
#define WG_UP_MTU               1380
#define WG_UP_MTU_MIN           1280
#define WG_UP_MTU_MAX           1420
#define WG_UP_PREFIX            "100.128.0.0/10"
#define WG_UP_KEEPALIVE         30          /* s, the server's interval */
#define WG_UP_BACKOFF_MIN       1000        /* ms */
#define WG_UP_BACKOFF_MAX       60000       /* ms */
#define WG_UP_RESYNC            60000       /* ms between device checks */
#define WG_UP_RETRY             5000        /* ms after a failed sync */
#define WG_UP_CONNECT_TIMEOUT   10000       /* ms */
#define WG_UP_REQUEST_TIMEOUT   30000       /* ms */
#define WG_UP_LOGOUT_TIMEOUT    5000        /* ms */
#define WG_UP_AUTH_KEY_MAX      512
#define WG_UP_ID_MAX            128
#define WG_UP_RELAY_SOCKET      "/run/dstack-vpc/wg-relay.sock"
#define WG_UP_RELAY_TARGET      443         /* peers' nginx :443 */
#define WG_UP_PATH_TICK         1000        /* ms between looks at peers */
#define WG_UP_STATUS_EVERY      2000        /* ms, counters in status.json */


typedef enum {
    WG_UP_REGISTERING = 0,
    WG_UP_CONNECTING,
    WG_UP_CONNECTED,
    WG_UP_REFUSED,
    WG_UP_STOPPED
} wg_up_state_e;


/* a peer's path and relay, kept across map changes, sorted by key */
typedef struct {
    uint8_t                  key[WG_KEY_SIZE];
    int64_t                  id;
    size_t                   node;          /* in the map, while updating */
    char                     name[WG_MAP_NAME_MAX + 1];
    wg_endpoint_t            direct;        /* first advertised endpoint */
    struct sockaddr_in       relay_ep;
    wg_relay_stats_t         relay;         /* as last read */
    wg_path_t                path;
    const char              *logged;        /* the last event logged */
    unsigned                 has_direct:1;
    unsigned                 has_relay:1;
} wg_up_peer_t;


typedef struct {
    /* configuration */
    char                     ifname[IFNAMSIZ];
    const char              *server;
    const char              *hostname;
    const char              *state_dir;
    const char              *hosts_file;
    const char              *instance_id;
    const char              *node_type;
    char                    *auth_key;
    wg_ctrl_t                ctrl;
    wg_allowedip_t           prefix;
    wg_endpoint_t            endpoints[WG_MAP_MAX_ENDPOINTS];
    size_t                   nendpoints;
    long                     silence;           /* ms */
    long                     backoff_max;       /* ms */
    uint32_t                 mtu;
    uint16_t                 listen_port;
    const char              *auth_key_file;
    unsigned                 ephemeral;         /* 0 or 1 */
    unsigned                 down_on_exit;      /* 0 or 1 */
    unsigned                 has_path_mode:1;

    /* the relay engine and each peer's path (docs/wgctl.md, "Paths") */
    wg_relay_t              *relay;
    const char              *relay_socket;
    int                      relay_gid;
    long                     relay_keepalive;   /* ms */
    const char              *mesh;
    char                     mesh_host[INET_ADDRSTRLEN];
    uint16_t                 mesh_port;
    char                     relay_error[160];
    wg_relay_peer_t         *relay_peers;       /* as last given */
    size_t                   nrelay_peers;
    wg_path_mode_e           path_mode;
    wg_path_conf_t           path_conf;
    wg_up_peer_t            *peers;             /* by key */
    size_t                   npeers;
    long long                next_path;
    long long                next_relay;
    long long                next_status;
    uint64_t                 if_tx;             /* packets into the device */
    uint64_t                 direct_tx;         /* peers' bytes, not relayed */
    unsigned                 counters_dirty:1;

    /* the node */
    uint8_t                  private_key[WG_KEY_SIZE];
    uint8_t                  public_key[WG_KEY_SIZE];
    char                     node_key[sizeof(WG_MAP_KEY_PREFIX)
                                      + WG_KEY_HEX_LEN];
    char                     name[WG_MAP_NAME_MAX + 1];
    wg_allowedip_t           reg_address;
    wg_peermap_t             map;

    /* the device as last read, with our changes since: a delta costs what
     * changed, not a read of every peer; read again on full maps, errors,
     * SIGHUP and every WG_UP_RESYNC */
    wg_device_t             *shadow;
    uint32_t                 ifindex;
    wg_allowedip_t           address;
    unsigned                 has_reg_address:1;
    unsigned                 address_set:1;
    unsigned                 route_set:1;

    /* the connection */
    wg_up_state_e            state;
    int                      pid_fd;
    long                     backoff;
    long long                last_frame;        /* monotonic ms */
    long long                next_sync;
    time_t                   connected_since;
    char                     last_error[256];
    unsigned                 registered:1;
    unsigned                 ever_registered:1;
    unsigned                 streaming:1;
    unsigned                 dirty:1;
    unsigned                 log_conflicts:1;
    unsigned                 status_dirty:1;
    wg_ctrl_ops_t            ops;               /* the agent's callbacks */
} wg_up_t;


/* cpclient.c: the control plane's client */
int cp_register(wg_up_t *up);
int cp_stream(wg_up_t *up);
void cp_logout(wg_up_t *up);
long cp_backoff(wg_up_t *up);


#endif /* _WG_UP_H_INCLUDED_ */
