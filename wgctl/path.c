/*
 * wgctl: a peer's path, direct UDP or the relay (path.h).  Pure: the
 * caller brings the clock and the counters.
 */


#include <string.h>

#include "path.h"


static void wg_path_enter(wg_path_t *p, wg_path_mode_e path, long long now,
    const char *event);


static void
wg_path_enter(wg_path_t *p, wg_path_mode_e path, long long now,
    const char *event)
{
    if (p->path != WG_PATH_AUTO && p->path != path) {
        p->switches++;
    }

    if (p->path != path) {
        p->since = now;
    }

    p->path = path;
    p->stall = 0;
    p->probe = 0;
    p->event = event;
}


wg_path_action_e
wg_path_step(wg_path_t *p, const wg_path_conf_t *conf, wg_path_mode_e mode,
    const wg_path_obs_t *obs)
{
    long long  now, quiet;
    uint64_t   rx, tx, drx, dtx;

    now = obs->now;
    p->event = NULL;

    /* the device's bytes less the relay's: what went over direct UDP */
    rx = obs->rx_bytes > obs->relay_rx ? obs->rx_bytes - obs->relay_rx : 0;
    tx = obs->tx_bytes > obs->relay_tx ? obs->tx_bytes - obs->relay_tx : 0;

    if (!p->seen || rx < p->direct_rx || tx < p->direct_tx) {
        /* the first look, or the counters started again (peer re-added) */
        drx = 0;
        dtx = 0;

        if (!p->seen) {
            p->seen = 1;
            p->retry = conf->retry;
        }

    } else {
        drx = rx - p->direct_rx;
        dtx = tx - p->direct_tx;
    }

    p->direct_rx = rx;
    p->direct_tx = tx;

    if (drx > 0) {
        p->direct_seen = now;
        p->grace = 0;
    }

    /* forced relay, or a peer that can only be reached through it */

    if (mode == WG_PATH_RELAY
        || (mode == WG_PATH_AUTO && !obs->has_direct))
    {
        if (!obs->has_relay) {
            /* nothing to set: the device's endpoint, if any, stays */
            if (p->path != WG_PATH_DIRECT && obs->has_endpoint
                && !obs->on_relay)
            {
                wg_path_enter(p, WG_PATH_DIRECT, now, NULL);
            }

            return WG_PATH_KEEP;
        }

        if (obs->on_relay) {
            if (p->path != WG_PATH_RELAY) {
                wg_path_enter(p, WG_PATH_RELAY, now, "relay");
            }

            return WG_PATH_KEEP;
        }

        wg_path_enter(p, WG_PATH_RELAY, now,
                      mode == WG_PATH_RELAY ? "relay (forced)"
                                            : "relay (no direct endpoint)");

        return WG_PATH_SET_RELAY;
    }

    /* forced direct: never the relay; without endpoints, the device's */

    if (mode == WG_PATH_DIRECT) {
        if (!obs->has_direct) {
            if (p->path != WG_PATH_DIRECT && obs->has_endpoint
                && !obs->on_relay)
            {
                wg_path_enter(p, WG_PATH_DIRECT, now, NULL);
            }

            return WG_PATH_KEEP;
        }

        if (obs->on_relay || !obs->has_endpoint) {
            wg_path_enter(p, WG_PATH_DIRECT, now, "direct (forced)");
            return WG_PATH_SET_DIRECT;
        }

        if (p->path != WG_PATH_DIRECT) {
            wg_path_enter(p, WG_PATH_DIRECT, now, NULL);
        }

        return WG_PATH_KEEP;
    }

    /* auto, and the peer advertises endpoints */

    if (!obs->has_relay) {
        /* nothing to fall back on */
        if (!obs->has_endpoint || obs->on_relay) {
            wg_path_enter(p, WG_PATH_DIRECT, now, "direct (no relay)");
            return WG_PATH_SET_DIRECT;
        }

        if (p->path != WG_PATH_DIRECT) {
            wg_path_enter(p, WG_PATH_DIRECT, now, NULL);
        }

        return WG_PATH_KEEP;
    }

    switch (p->path) {

    case WG_PATH_AUTO:

        if (obs->on_relay) {
            wg_path_enter(p, WG_PATH_RELAY, now, NULL);
            p->next_probe = now + p->retry;
            return WG_PATH_KEEP;
        }

        p->grace = WG_PATH_GRACE;

        if (obs->has_endpoint) {
            /* what the device has (it may have roamed there) */
            wg_path_enter(p, WG_PATH_DIRECT, now, NULL);
            return WG_PATH_KEEP;
        }

        wg_path_enter(p, WG_PATH_DIRECT, now, "direct (trying)");

        return WG_PATH_SET_DIRECT;

    case WG_PATH_DIRECT:

        if (!obs->has_endpoint) {
            p->event = "direct (endpoint lost)";
            return WG_PATH_SET_DIRECT;
        }

        if (p->probe) {
            if (drx > 0) {
                p->probe = 0;
                p->stall = 0;
                p->retry = conf->retry;
                p->event = "direct works";

                return obs->on_relay ? WG_PATH_SET_DIRECT : WG_PATH_KEEP;
            }

            /*
             * Nothing came back directly within a round trip of the
             * probe's keepalive: back to the relay.  A probe is short on
             * purpose: what the device sends meanwhile goes into a path
             * that may be dead, and TCP takes each such loss as a reason
             * to back off further.
             */
            if (now - p->probe >= WG_PATH_PROBE_WAIT) {
                p->retry *= 2;

                if (p->retry > conf->retry * WG_PATH_RETRY_FACTOR) {
                    p->retry = conf->retry * WG_PATH_RETRY_FACTOR;
                }

                wg_path_enter(p, WG_PATH_RELAY, now,
                              "relay (no answer over direct)");
                p->next_probe = now + p->retry;

                return obs->on_relay ? WG_PATH_KEEP : WG_PATH_SET_RELAY;
            }

            return WG_PATH_KEEP;
        }

        if (obs->on_relay) {
            /*
             * the peer's packets came over the relay, so the device sends
             * there now; direct bytes a moment ago mean a path change in
             * flight (packets reordered across the two paths), so insist
             */
            if (p->direct_seen && now - p->direct_seen < conf->timeout) {
                p->event = "direct (held)";
                return WG_PATH_SET_DIRECT;
            }

            wg_path_enter(p, WG_PATH_RELAY, now,
                          "relay (the peer came over the relay)");
            p->next_probe = now + p->retry;

            return WG_PATH_KEEP;
        }

        if (drx > 0) {
            p->stall = 0;
            p->grace = 0;

        } else if ((dtx > WG_PATH_KEEPALIVE_BYTES || obs->unsent)
                   && p->stall == 0)
        {
            p->stall = now;
        }

        quiet = now - (p->direct_seen > p->since ? p->direct_seen : p->since);

        if ((p->stall && now - p->stall >= conf->timeout + p->grace)
            || quiet >= WG_PATH_QUIET + conf->timeout + p->grace)
        {
            p->retry = conf->retry;
            p->grace = 0;
            wg_path_enter(p, WG_PATH_RELAY, now,
                          "relay (no answer over direct)");
            p->next_probe = now + p->retry;

            return WG_PATH_SET_RELAY;
        }

        return WG_PATH_KEEP;

    case WG_PATH_RELAY:

        if (!obs->on_relay) {
            if (!obs->has_endpoint) {
                p->event = "relay (endpoint lost)";
                return WG_PATH_SET_RELAY;
            }

            /* the device roamed: the peer's packets came directly */
            wg_path_enter(p, WG_PATH_DIRECT, now,
                          "direct (the peer came directly)");

            if (drx == 0) {
                p->probe = now;
            }

            return WG_PATH_KEEP;
        }

        if (now >= p->next_probe) {
            wg_path_enter(p, WG_PATH_DIRECT, now, "direct (probing)");
            p->probe = now;

            return WG_PATH_SET_DIRECT;
        }

        return WG_PATH_KEEP;
    }

    return WG_PATH_KEEP;
}


const char *
wg_path_name(wg_path_mode_e path)
{
    switch (path) {
    case WG_PATH_DIRECT:
        return "direct";
    case WG_PATH_RELAY:
        return "relay";
    default:
        return "auto";
    }
}


int
wg_path_parse(const char *text, wg_path_mode_e *mode)
{
    if (strcmp(text, "auto") == 0) {
        *mode = WG_PATH_AUTO;

    } else if (strcmp(text, "direct") == 0) {
        *mode = WG_PATH_DIRECT;

    } else if (strcmp(text, "relay") == 0) {
        *mode = WG_PATH_RELAY;

    } else {
        return -1;
    }

    return 0;
}
