/*
 * wgctl: the choice of a peer's path, direct UDP or the relay through the
 * gateway (docs/wgctl.md, "Paths").  A pure state machine: once a second
 * the agent hands it what it sees of one peer (the device's endpoint and
 * byte counters, the relay's counters) and it answers what to set, if
 * anything.  No I/O and no clock of its own, so every case is unit-tested.
 *
 * The device decides as much as the agent: WireGuard sends to the source
 * address of the last packet it authenticated (roaming).  So the path is
 * whatever the device's endpoint is now; the agent only sets it when it
 * starts a peer, gives up on direct, or probes direct again.
 */


#ifndef _WG_PATH_H_INCLUDED_
#define _WG_PATH_H_INCLUDED_


#include <stdint.h>


#define WG_PATH_TIMEOUT         5000        /* ms, default */
#define WG_PATH_RETRY           30000       /* ms, default */
#define WG_PATH_RETRY_FACTOR    8           /* the retry doubles up to 8x */
#define WG_PATH_PROBE_WAIT      500         /* ms a probe waits for an answer */

/*
 * a new peer's first handshake may reach a peer that does not know it
 * yet; WireGuard tries again after 5 s (REKEY_TIMEOUT)
 */
#define WG_PATH_GRACE           5000        /* ms */

/*
 * every peer's device sends something at least every 25 s (persistent
 * keepalive): nothing in this long and the path timeout is a dead path,
 * even when nothing here counted as sent (a local firewall makes the
 * device's sends fail, and WireGuard counts only what it sent)
 */
#define WG_PATH_QUIET           (25000 + 2000)  /* ms */

/* a persistent keepalive on the wire: 16 header + 16 tag bytes */
#define WG_PATH_KEEPALIVE_BYTES 32


typedef enum {
    WG_PATH_AUTO = 0,
    WG_PATH_DIRECT,
    WG_PATH_RELAY
} wg_path_mode_e;


typedef enum {
    WG_PATH_KEEP = 0,
    WG_PATH_SET_DIRECT,         /* the peer's first advertised endpoint */
    WG_PATH_SET_RELAY           /* the peer's relay endpoint */
} wg_path_action_e;


typedef struct {
    long                 timeout;       /* ms */
    long                 retry;         /* ms */
} wg_path_conf_t;


/* one look at a peer */
typedef struct {
    long long            now;           /* ms, monotonic */
    uint64_t             rx_bytes;      /* the device's, both paths */
    uint64_t             tx_bytes;
    uint64_t             relay_rx;      /* the relay engine's */
    uint64_t             relay_tx;
    unsigned             has_direct:1;  /* the peer advertises endpoints */
    unsigned             has_relay:1;   /* it has a relay endpoint */
    unsigned             on_relay:1;    /* the device sends to it */
    unsigned             has_endpoint:1; /* the device has a usable one */
    unsigned             unsent:1;      /* the device took packets that no
                                           peer's counters show as sent */
} wg_path_obs_t;


typedef struct {
    wg_path_mode_e       path;          /* DIRECT or RELAY; AUTO: not yet */
    long long            since;         /* ms, on this path since */
    long long            stall;         /* ms, data sent and nothing
                                           came back directly since; 0 */
    long long            probe;         /* ms, probing direct since; 0 */
    long long            next_probe;    /* ms */
    long long            direct_seen;   /* ms, direct bytes came in */
    uint64_t             direct_rx;     /* as last seen */
    uint64_t             direct_tx;
    long                 retry;         /* ms, the current interval */
    long                 grace;         /* ms, more patience at first */
    unsigned             switches;      /* path changes, either way */
    const char          *event;         /* what this step did, for the
                                           log; NULL: nothing */
    unsigned             seen:1;
} wg_path_t;


wg_path_action_e wg_path_step(wg_path_t *p, const wg_path_conf_t *conf,
    wg_path_mode_e mode, const wg_path_obs_t *obs);
const char *wg_path_name(wg_path_mode_e path);
int wg_path_parse(const char *text, wg_path_mode_e *mode);


#endif /* _WG_PATH_H_INCLUDED_ */
