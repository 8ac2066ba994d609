/*
 * libFuzzer target for wgctl's side of the control plane's map stream
 * (wgctl/peermap.c): the 4-byte length + JSON framing, each MapResponse
 * applied to the node table (a full map, PeersChanged, PeersChangedPatch,
 * PeersRemoved, KeepAlive), and the desired device and hosts entries
 * built from the result.
 *
 * Two input forms (seeds in fuzz/corpus/peermap, captured from the
 * control plane by fuzz/make-corpus):
 *   - a map stream as wgctl reads it from /machine/map, fed in two
 *     pieces split where its first byte says, so that frames also arrive
 *     cut in the middle;
 *   - when it starts with '{': MapResponse frames one per line, applied
 *     in order without the framing, so that mutations of the JSON are not
 *     lost to a length prefix that no longer matches.
 * No self key is set: any "Node" entry is taken as this node's.
 */

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "peermap.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int peermap_fuzz_frame(void *data, const char *frame, size_t len);
static void peermap_fuzz_log(void *data, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


static const uint8_t  peermap_fuzz_priv[WG_KEY_SIZE] = { 0x40, 1, 2, 3 };


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                   split, nhosts, n;
    const uint8_t           *nl;
    wg_host_t               *hosts;
    wg_frames_t              fr;
    wg_device_t             *dev;
    wg_peermap_t             pm;
    wg_allowedip_t           prefix;
    wg_map_desired_stats_t   st;

    memset(&prefix, 0, sizeof(prefix));

    if (wg_allowedip_parse(&prefix, "100.128.0.0/10") != 0) {
        abort();
    }

    wg_peermap_init(&pm, &prefix, NULL, peermap_fuzz_log, NULL);
    wg_frames_init(&fr, 1 << 20);

    if (size > 0 && data[0] == '{') {
        while (size > 0) {
            nl = memchr(data, '\n', size);
            n = nl != NULL ? (size_t) (nl - data) : size;

            if (n > 0 && peermap_fuzz_frame(&pm, (const char *) data, n) != 0)
            {
                break;
            }

            data += n + (nl != NULL);
            size -= n + (nl != NULL);
        }

    } else {
        split = size > 0 ? data[0] % (size + 1) : 0;

        if (wg_frames_feed(&fr, data, split, peermap_fuzz_frame, &pm) == 0) {
            (void) wg_frames_feed(&fr, data + split, size - split,
                                  peermap_fuzz_frame, &pm);
        }
    }

    wg_frames_free(&fr);

    if (wg_peermap_desired(&pm, NULL, peermap_fuzz_priv, 41641, 0, &dev,
                           &hosts, &nhosts, &st)
        == 0)
    {
        wg_device_free(dev);
        free(hosts);
    }

    wg_peermap_free(&pm);

    return 0;
}


static int
peermap_fuzz_frame(void *data, const char *frame, size_t len)
{
    char              err[256];
    wg_map_result_t   res;

    /* a protocol error ends the stream, as in wgctl up */
    return wg_peermap_apply(data, frame, len, &res, err, sizeof(err));
}


static void
peermap_fuzz_log(void *data, const char *fmt, ...)
{
}
