/*
 * wgctl: the WireGuard device layer, its bottom: containers and values.
 *
 * One description of a device serves three purposes: the actual state read
 * from a backend, the desired state read from a config file or the control
 * plane, and the change set that wg_diff() computes between the two and a
 * backend applies.  In a change set a flag means "set this field"; a field
 * without its flag is left as the device has it.  The backends (uapi.h,
 * genl.h) sit above this and ipc.h, which picks one, above them.
 */


#ifndef _WGDEV_H_INCLUDED_
#define _WGDEV_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>


#define WG_KEY_SIZE                 32
#define WG_KEY_B64_LEN              44
#define WG_KEY_HEX_LEN              64

#define WG_DEV_HAS_PRIVATE_KEY      0x0001
#define WG_DEV_HAS_PUBLIC_KEY       0x0002
#define WG_DEV_HAS_LISTEN_PORT      0x0004
#define WG_DEV_HAS_FWMARK           0x0008
#define WG_DEV_REPLACE_PEERS        0x0010

#define WG_PEER_REMOVE              0x0001
#define WG_PEER_REPLACE_ALLOWEDIPS  0x0002
#define WG_PEER_HAS_KEEPALIVE       0x0004
#define WG_PEER_HAS_PRESHARED_KEY   0x0008

#define WG_MAX_PEERS                (1 << 20)
#define WG_MAX_ALLOWEDIPS           (1 << 16)



typedef struct {
    union {
        struct in_addr      ip4;
        struct in6_addr     ip6;
    } addr;
    uint16_t                family;
    uint8_t                 cidr;
} wg_allowedip_t;


typedef union {
    struct sockaddr         sa;
    struct sockaddr_in      sin;
    struct sockaddr_in6     sin6;
} wg_endpoint_t;


typedef struct {
    uint8_t                 public_key[WG_KEY_SIZE];
    uint8_t                 preshared_key[WG_KEY_SIZE];
    wg_endpoint_t           endpoint;
    wg_allowedip_t         *allowedips;
    size_t                  nallowedips;
    size_t                  allowedips_cap;

    /* read-only statistics, filled by wg_device_get() */
    struct timespec         last_handshake;
    uint64_t                rx_bytes;
    uint64_t                tx_bytes;

    uint32_t                flags;
    uint16_t                keepalive;
} wg_peer_t;


typedef struct {
    char                    name[IFNAMSIZ];
    uint8_t                 private_key[WG_KEY_SIZE];
    uint8_t                 public_key[WG_KEY_SIZE];
    wg_peer_t              *peers;
    size_t                  npeers;
    size_t                  peers_cap;
    uint32_t                ifindex;
    uint32_t                fwmark;
    uint32_t                flags;
    uint16_t                listen_port;
} wg_device_t;


typedef struct {
    size_t                  added;
    size_t                  removed;
    size_t                  changed;
    size_t                  unchanged;
    unsigned                private_key:1;
    unsigned                listen_port:1;
    unsigned                fwmark:1;
} wg_diff_stats_t;


/* what a backend sent: netlink messages or UAPI requests, and their bytes */
typedef struct {
    size_t                  requests;
    size_t                  bytes;
} wg_io_stats_t;


/* wgdev.c: the containers */
wg_device_t *wg_device_new(const char *name);
void wg_device_free(wg_device_t *dev);
wg_peer_t *wg_device_add_peer(wg_device_t *dev, const uint8_t *public_key);
wg_peer_t *wg_device_find_peer(const wg_device_t *dev,
    const uint8_t *public_key);
int wg_peer_add_allowedip(wg_peer_t *peer, const wg_allowedip_t *aip);
void wg_peer_clear_allowedips(wg_peer_t *peer);
int wg_device_is_noop(const wg_device_t *dev);

/* wgdev.c: values */
int wg_ifname_valid(const char *name);
int wg_allowedip_parse(wg_allowedip_t *aip, const char *text);
void wg_allowedip_normalize(wg_allowedip_t *aip);
int wg_allowedip_cmp(const wg_allowedip_t *a, const wg_allowedip_t *b);
int wg_allowedip_format(char *buf, size_t size, const wg_allowedip_t *aip);
int wg_endpoint_parse(wg_endpoint_t *ep, const char *text);
int wg_endpoint_equal(const wg_endpoint_t *a, const wg_endpoint_t *b);
int wg_endpoint_format(char *buf, size_t size, const wg_endpoint_t *ep);
const char *wg_strerror(int err);

/* keys.c */
int wg_key_from_base64(uint8_t *key, const char *text);
void wg_key_to_base64(char *out, const uint8_t *key);
int wg_key_from_hex(uint8_t *key, const char *text);
void wg_key_to_hex(char *out, const uint8_t *key);
int wg_key_is_zero(const uint8_t *key);
void wg_key_clamp(uint8_t *out, const uint8_t *key);
int wg_key_generate(uint8_t *key);
int wg_key_public(uint8_t *pub, const uint8_t *priv);
void wg_memzero(void *p, size_t n);

/* wgdiff.c */
int wg_diff(const wg_device_t *actual, const wg_device_t *desired,
    wg_device_t **changes, wg_diff_stats_t *stats);
int wg_device_apply(wg_device_t *dev, const wg_device_t *changes);

/* config.c */
int wg_config_parse(wg_device_t *dev, char *text, size_t len,
    char *err, size_t errlen);
int wg_config_read(wg_device_t *dev, const char *path,
    char *err, size_t errlen);


#endif /* _WGDEV_H_INCLUDED_ */
