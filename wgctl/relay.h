/*
 * The VPN's packet path over the dstack gateway (docs/wg-relay.md): a
 * node's WireGuard datagrams to a peer, carried verbatim over a long-lived
 * HTTP/1.1 Upgrade stream through the local nginx mesh, the gateway (TLS
 * passthrough by SNI) and the peer's nginx :443 (dstack_auth) to the
 * peer's wgctl, which hands them to its own WireGuard device.
 *
 * Per peer the engine owns one UDP socket on 127.0.0.1 (the "relay
 * endpoint"): when the peer's path is the relay, the device's endpoint
 * for that peer is this socket.  What the device sends there goes to the
 * peer's tunnel; what arrives from the peer's tunnels is sent from this
 * socket to the device's listen port on 127.0.0.1, and nowhere else.
 *
 * The engine runs in its own thread; every function here is safe to call
 * from the agent's thread.
 */


#ifndef _WGCTL_RELAY_H_INCLUDED_
#define _WGCTL_RELAY_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>


#define WG_RELAY_PATH           "/.dstack/wg-relay"
#define WG_RELAY_PROTOCOL       "dstack-wg-relay"
#define WG_RELAY_HDR_FROM       "WG-Relay-From"
#define WG_RELAY_HDR_TO         "WG-Relay-To"
#define WG_RELAY_APP_MAX        40
#define WG_RELAY_INSTANCE_MAX   128
#define WG_RELAY_KEEPALIVE      10000       /* ms, default */
#define WG_RELAY_BUFFER         (256 * 1024) /* per tunnel, default */
#define WG_RELAY_DATAGRAM_MAX   65535


typedef struct wg_relay_s  wg_relay_t;


typedef struct {
    /* the local nginx mesh that outbound tunnels go through */
    const char          *mesh_host;             /* "127.0.0.1" */
    uint16_t             mesh_port;             /* 80 */
    uint16_t             target_port;           /* x-dstack-target-port */
    /* inbound tunnels: nginx :443 proxies them to this Unix socket */
    const char          *listen_path;
    int                  listen_gid;            /* -1: leave the group */
    uint8_t              self_key[32];          /* this node's public key */
    uint16_t             device_port;           /* the device's listen port */
    long                 keepalive;             /* ms */
    size_t               buffer_max;            /* bytes per tunnel */
    void               (*log)(const char *fmt, ...)
                             __attribute__((format(printf, 1, 2)));
} wg_relay_conf_t;


/* what the map says of a peer: its key, and how the gateway reaches it */
typedef struct {
    uint8_t              key[32];
    char                 app[WG_RELAY_APP_MAX + 1];            /* hex */
    char                 instance[WG_RELAY_INSTANCE_MAX + 1];  /* or "" */
} wg_relay_peer_t;


typedef struct {
    uint64_t             rx_bytes;      /* datagram bytes from the peer */
    uint64_t             tx_bytes;      /* datagram bytes to the peer */
    uint64_t             rx_packets;
    uint64_t             tx_packets;
    uint64_t             drops;         /* datagrams dropped: full buffer,
                                           no tunnel, refused */
    unsigned             tunnels;       /* open streams, either direction */
    int                  dialing;       /* an outbound dial in progress */
    long long            last_rx;       /* ms (CLOCK_MONOTONIC), 0: never */
    char                 last_error[128];
} wg_relay_stats_t;


/* binds the listener, starts the thread; 0 or -errno */
int wg_relay_start(wg_relay_t **relay, const wg_relay_conf_t *conf);
/* closes every tunnel and socket, joins the thread, frees */
void wg_relay_stop(wg_relay_t *relay);

/*
 * Replaces the peer table.  A new peer gets its relay endpoint at once
 * (no tunnel until the device sends to it or the peer dials in); a peer
 * no longer listed loses its endpoint and its tunnels, inbound too.
 */
int wg_relay_set_peers(wg_relay_t *relay, const wg_relay_peer_t *peers,
    size_t n);
/* after the device's listen port changed */
void wg_relay_set_device_port(wg_relay_t *relay, uint16_t port);

/* the peer's relay endpoint (127.0.0.1:port); 0, or -ENOENT */
int wg_relay_endpoint(wg_relay_t *relay, const uint8_t key[32],
    struct sockaddr_in *sin);
/* 0, or -ENOENT for a key not in the table */
int wg_relay_stats(wg_relay_t *relay, const uint8_t key[32],
    wg_relay_stats_t *st);


/*
 * The wire, exposed for the unit tests (wgctl/test_relay.c) and for
 * anyone who speaks it; pure functions, no state.  Added by the engine
 * (relay.c); the API above is unchanged.
 */

#define WG_RELAY_HEADERS_MAX    8192        /* request/response headers */

typedef struct {
    unsigned             get:1;         /* method GET */
    unsigned             path:1;        /* path is WG_RELAY_PATH */
    unsigned             upgrade:1;     /* Upgrade: dstack-wg-relay */
    unsigned             has_from:1;    /* WG-Relay-From, valid hex key */
    unsigned             has_to:1;      /* WG-Relay-To, valid hex key */
    unsigned             has_app:1;     /* X-Dstack-App-Id, bounded */
    unsigned             bad:1;         /* a header repeated or invalid */
    uint8_t              from[32];
    uint8_t              to[32];
    char                 app[WG_RELAY_APP_MAX + 1];
} wg_relay_request_t;

/* the headers' length when complete, 0: need more, -1: malformed */
long wg_relay_parse_request(const char *buf, size_t len,
    wg_relay_request_t *rq);
/*
 * 101 to accept, else 400/403/404 with *why set; peer_app is the app the
 * map has for rq->from, NULL when the key is not in the map
 */
int wg_relay_request_verdict(const wg_relay_request_t *rq,
    const uint8_t self_key[32], const char *peer_app, const char **why);
/* the headers' length when complete, 0: need more, -1: malformed;
   *content_length is -1 without the header */
long wg_relay_parse_response(const char *buf, size_t len, int *status,
    long *content_length);
/* the "error" of a JSON body (else the body's start), printable, bounded */
size_t wg_relay_error_text(const char *body, size_t len, char *out,
    size_t size);

/* frames: 2-byte big-endian length, then the datagram; 0 is a keepalive */
#define WG_RELAY_FRAME_HDR      2

static inline void
wg_relay_frame_header(uint8_t *hdr, size_t len)
{
    hdr[0] = (uint8_t) (len >> 8);
    hdr[1] = (uint8_t) len;
}

/* 1 and *dlen when buf holds a whole frame, 0: need more */
static inline int
wg_relay_frame_parse(const uint8_t *buf, size_t len, size_t *dlen)
{
    size_t  n;

    if (len < WG_RELAY_FRAME_HDR) {
        return 0;
    }

    n = (size_t) buf[0] << 8 | buf[1];

    if (len < WG_RELAY_FRAME_HDR + n) {
        return 0;
    }

    *dlen = n;

    return 1;
}

/* a WireGuard message: type 1..4, three zero bytes, long enough */
int wg_relay_datagram_valid(const uint8_t *d, size_t len);


#endif /* _WGCTL_RELAY_H_INCLUDED_ */
