/*
 * wgctl: the node agent's view of the VPC (docs/control-plane.md).  The
 * map stream's frames are cut out of the byte stream, each MapResponse is
 * applied to an in-memory table of nodes (a full map or its deltas), and
 * the table gives the desired WireGuard device and hosts entries.  Pure
 * functions: no I/O, so every case is unit-tested.
 *
 * A node that fails validation (bad key, an address outside the VPC
 * prefix, a bad name) is skipped with a log line; the rest of the frame
 * still applies.  A frame that is not a JSON object, or is too deep or too
 * large, is a protocol error: the stream is reopened for a new full map.
 */


#ifndef _WG_PEERMAP_H_INCLUDED_
#define _WG_PEERMAP_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#include "wgdev.h"
#include "hosts.h"


/* the server's cap too (NGX_HTTP_DSTACK_VPC_CP_FRAME_MAX): a full map of
 * ~17,000 nodes at ~490 bytes each (docs/control-plane.md) */
#define WG_MAP_FRAME_MAX       (8 << 20)
#define WG_MAP_JSON_DEPTH      32
#define WG_MAP_MAX_PEERS       65536
#define WG_MAP_MAX_ADDRS       8
#define WG_MAP_MAX_ALLOWEDIPS  16
#define WG_MAP_MAX_ENDPOINTS   16
#define WG_MAP_NAME_MAX        63
#define WG_MAP_KEEPALIVE       25
#define WG_MAP_KEY_PREFIX      "nodekey:"
#define WG_MAP_APP_LEN         40
#define WG_MAP_INSTANCE_MAX    128


/* the map's "WGPath": how peers are reached (docs/wgctl.md) */
typedef enum {
    WG_MAP_PATH_NONE = 0,           /* the map did not say */
    WG_MAP_PATH_AUTO,
    WG_MAP_PATH_DIRECT,
    WG_MAP_PATH_RELAY
} wg_map_path_e;


typedef void (*wg_map_log_pt)(void *data, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


typedef struct {
    int64_t                 id;
    uint64_t                seq;
    uint8_t                 key[WG_KEY_SIZE];
    char                    name[WG_MAP_NAME_MAX + 1];
    char                    address[INET6_ADDRSTRLEN];
    char                    last_seen[40];
    char                    app[WG_MAP_APP_LEN + 1];        /* or "" */
    char                    instance[WG_MAP_INSTANCE_MAX + 1];
    wg_allowedip_t          addrs[WG_MAP_MAX_ADDRS];
    wg_allowedip_t          allowedips[WG_MAP_MAX_ALLOWEDIPS];
    wg_endpoint_t           endpoints[WG_MAP_MAX_ENDPOINTS];
    size_t                  naddrs;
    size_t                  nallowedips;
    size_t                  nendpoints;
    unsigned                online:1;
    unsigned                removed:1;
} wg_map_node_t;


typedef struct {
    wg_allowedip_t          prefix;
    uint8_t                 self_key[WG_KEY_SIZE];
    wg_map_node_t           self;
    wg_map_node_t         **peers;          /* sorted by id */
    size_t                  npeers;
    size_t                  cap;
    uint64_t                seq;
    wg_map_path_e           wg_path;        /* of the last full map */
    wg_map_log_pt           log;
    void                   *log_data;
    unsigned                has_self_key:1;
    unsigned                has_self:1;
    unsigned                has_full:1;
} wg_peermap_t;


/* what one frame did */
typedef struct {
    size_t                  added;
    size_t                  changed;
    size_t                  removed;
    size_t                  patched;
    size_t                  skipped;
    unsigned                full:1;
    unsigned                self:1;
    unsigned                keepalive:1;
} wg_map_result_t;


/* conflicts found while building the desired device */
typedef struct {
    size_t                  peers;
    size_t                  hosts;
    size_t                  dropped;
    size_t                  unnamed;
} wg_map_desired_stats_t;


/* the 4-byte little-endian length + JSON frames of the map stream */
typedef int (*wg_frame_handler_pt)(void *data, const char *frame,
    size_t len);

typedef struct {
    uint8_t                 head[4];
    size_t                  head_len;
    char                   *body;
    size_t                  body_len;
    size_t                  body_have;
    size_t                  max;
} wg_frames_t;


void wg_frames_init(wg_frames_t *fr, size_t max);
int wg_frames_feed(wg_frames_t *fr, const void *data, size_t len,
    wg_frame_handler_pt handler, void *ctx);
void wg_frames_free(wg_frames_t *fr);

int wg_json_depth_ok(const char *p, size_t len, unsigned max);

void wg_peermap_init(wg_peermap_t *pm, const wg_allowedip_t *prefix,
    const uint8_t *self_key, wg_map_log_pt log, void *log_data);
void wg_peermap_free(wg_peermap_t *pm);
int wg_peermap_apply(wg_peermap_t *pm, const char *json, size_t len,
    wg_map_result_t *res, char *err, size_t errlen);
int wg_peermap_desired(const wg_peermap_t *pm, const wg_device_t *actual,
    const uint8_t *private_key, uint16_t listen_port, int log,
    wg_device_t **desired, wg_host_t **hosts, size_t *nhosts,
    wg_map_desired_stats_t *stats);

int wg_map_prefix_contains(const wg_allowedip_t *prefix,
    const wg_allowedip_t *aip);
int wg_map_name_parse(char *out, size_t size, const char *name);
int wg_map_key_parse(uint8_t *key, const char *text);
int wg_map_path_parse(const char *text, wg_map_path_e *path);
const char *wg_map_path_name(wg_map_path_e path);
void wg_map_key_format(char *out, const uint8_t *key);


#endif /* _WG_PEERMAP_H_INCLUDED_ */
