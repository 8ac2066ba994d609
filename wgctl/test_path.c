/*
 * wgctl unit tests: the path state machine (path.c), fed observations a
 * second apart as the agent feeds it.
 */


#include <string.h>

#include "test.h"
#include "path.h"


typedef struct {
    wg_path_t               p;
    wg_path_conf_t          conf;
    wg_path_obs_t           o;
    wg_path_mode_e          mode;
} test_peer_t;


static void test_peer_init(test_peer_t *t, wg_path_mode_e mode);
static wg_path_action_e test_step(test_peer_t *t, uint64_t rx, uint64_t tx);
static void test_apply(test_peer_t *t, wg_path_action_e a);
static int test_until(test_peer_t *t, wg_path_action_e want, long max,
    uint64_t rx, uint64_t tx, long *steps);
static void test_path_auto(void);
static void test_path_relay(void);
static void test_path_forced(void);
static void test_path_counters(void);


static void
test_peer_init(test_peer_t *t, wg_path_mode_e mode)
{
    memset(t, 0, sizeof(test_peer_t));

    t->conf.timeout = WG_PATH_TIMEOUT;
    t->conf.retry = WG_PATH_RETRY;
    t->mode = mode;
    t->o.now = 1000000;
    t->o.has_direct = 1;
    t->o.has_relay = 1;
}


/* one second on: the device's counters grew by rx and tx bytes */

static wg_path_action_e
test_step(test_peer_t *t, uint64_t rx, uint64_t tx)
{
    wg_path_action_e  a;

    t->o.now += 1000;
    t->o.rx_bytes += rx;
    t->o.tx_bytes += tx;

    /* what the relay carried is in the device's counters too */
    if (t->o.on_relay) {
        t->o.relay_rx += rx;
        t->o.relay_tx += tx;
    }

    a = wg_path_step(&t->p, &t->conf, t->mode, &t->o);
    test_apply(t, a);

    return a;
}


/* what the agent does with an answer */

static void
test_apply(test_peer_t *t, wg_path_action_e a)
{
    if (a == WG_PATH_SET_DIRECT) {
        t->o.on_relay = 0;
        t->o.has_endpoint = 1;

    } else if (a == WG_PATH_SET_RELAY) {
        t->o.on_relay = 1;
        t->o.has_endpoint = 1;
    }
}


/* steps until the answer is "want": 1 and the steps it took, or 0 */

static int
test_until(test_peer_t *t, wg_path_action_e want, long max, uint64_t rx,
    uint64_t tx, long *steps)
{
    long  i;

    for (i = 1; i <= max; i++) {
        if (test_step(t, rx, tx) == want) {
            *steps = i;
            return 1;
        }
    }

    *steps = i;

    return 0;
}


static void
test_path_auto(void)
{
    long              i, n = 0;
    int               held, bad;
    test_peer_t       t;
    wg_path_action_e  a;

    test_peer_init(&t, WG_PATH_AUTO);

    a = test_step(&t, 0, 0);
    ok(a == WG_PATH_SET_DIRECT && t.p.path == WG_PATH_DIRECT,
       "path: a new peer with endpoints starts direct");

    /* traffic both ways for a minute */
    bad = 0;

    for (i = 0; i < 60; i++) {
        bad |= (test_step(&t, 1000, 1000) != WG_PATH_KEEP);
    }

    ok(!bad && t.p.path == WG_PATH_DIRECT && t.p.switches == 0,
       "path: answered traffic stays direct");

    /* idle: keepalives each way, 25 s apart, at different times */
    bad = 0;

    for (i = 0; i < 300; i++) {
        bad |= (test_step(&t, i % 25 == 3 ? 32 : 0, i % 25 == 17 ? 32 : 0)
                != WG_PATH_KEEP);
    }

    ok(!bad && t.p.path == WG_PATH_DIRECT,
       "path: keepalives alone never look like a dead path");

    /* UDP blocked: data goes out, nothing comes back */
    test_until(&t, WG_PATH_SET_RELAY, 60, 0, 1000, &n);
    ok(n == 6 && t.p.path == WG_PATH_RELAY && t.p.switches == 1,
       "path: seen at the next look, then 5 s without an answer: relay");
    ok(t.p.event != NULL && strstr(t.p.event, "no answer") != NULL,
       "path: the switch says why");

    /* on the relay, traffic flows; a probe after 30 s */
    test_until(&t, WG_PATH_SET_DIRECT, 100, 1000, 1000, &n);
    ok(n == 30 && t.p.path == WG_PATH_DIRECT && t.p.probe != 0,
       "path: direct probed again after 30 s (after %ld s)", n);

    /*
     * still blocked: the peer's relayed packets take the device back to
     * the relay, which carries the traffic while the probe waits its 5 s
     */
    held = 0;
    n = 0;

    for (i = 0; i < 5; i++) {
        /* data went out directly, the answers came over the relay */
        t.o.tx_bytes += 1000;
        t.o.rx_bytes += 1000;
        t.o.relay_rx += 1000;
        t.o.now += 1000;
        t.o.on_relay = 1;

        a = wg_path_step(&t.p, &t.conf, t.mode, &t.o);
        test_apply(&t, a);
        held += (a == WG_PATH_SET_DIRECT);

        if (n == 0 && t.p.path == WG_PATH_RELAY) {
            n = i + 1;
        }
    }

    ok(n == 1, "path: a probe whose direct data goes unanswered for a "
       "second ends then");

    ok(held == 0 && a == WG_PATH_KEEP && t.p.path == WG_PATH_RELAY,
       "path: a failed probe never takes traffic off the relay again");
    ok(t.p.retry == 2 * WG_PATH_RETRY, "path: the retry doubles to 60 s");

    for (i = 0; i < 4; i++) {
        test_until(&t, WG_PATH_SET_DIRECT, 1000, 1000, 1000, &n);
        test_until(&t, WG_PATH_SET_RELAY, 10, 0, 1000, &n);
    }

    ok(t.p.retry == WG_PATH_RETRY_FACTOR * WG_PATH_RETRY,
       "path: the retry stops doubling at 8x (%ld ms)", t.p.retry);

    /* UDP back: the probe sees direct bytes come in */
    test_until(&t, WG_PATH_SET_DIRECT, 1000, 1000, 1000, &n);
    ok(n == 240, "path: the next probe 240 s later (after %ld s)", n);

    a = test_step(&t, 1000, 1000);
    ok(a == WG_PATH_KEEP && t.p.path == WG_PATH_DIRECT && t.p.probe == 0
       && t.p.retry == WG_PATH_RETRY,
       "path: direct works again: it stays, the retry is 30 s again");

    /*
     * a relayed packet overtaken by direct ones arrives last: the device
     * roams to the relay; direct bytes a moment ago: set direct again
     */
    t.o.on_relay = 1;
    a = wg_path_step(&t.p, &t.conf, t.mode, &t.o);
    test_apply(&t, a);
    ok(a == WG_PATH_SET_DIRECT && t.p.path == WG_PATH_DIRECT,
       "path: a roam to the relay right after direct bytes is undone");

    /* the peer moved to the relay long ago and comes over it: follow */
    for (i = 0; i < 10; i++) {
        test_step(&t, 0, 0);
    }

    t.o.on_relay = 1;
    a = test_step(&t, 1000, 1000);
    ok(a == WG_PATH_KEEP && t.p.path == WG_PATH_RELAY,
       "path: the device roamed to the relay: the agent follows");

    /* and the peer's packets come directly again: follow too */
    t.o.on_relay = 0;
    t.o.relay_rx -= 0;
    a = test_step(&t, 500, 0);
    ok(a == WG_PATH_KEEP && t.p.path == WG_PATH_DIRECT && t.p.probe == 0,
       "path: the device roamed to a direct address: the agent follows");

    /*
     * a firewall here drops what the device sends: WireGuard counts
     * nothing; the device took packets all the same (unsent)
     */
    test_until(&t, WG_PATH_KEEP, 10, 1000, 1000, &n);

    for (i = 0; i < 10; i++) {
        test_step(&t, 1000, 1000);
    }

    t.o.unsent = 1;
    test_until(&t, WG_PATH_SET_RELAY, 60, 0, 0, &n);
    t.o.unsent = 0;
    ok(n == 6 && t.p.path == WG_PATH_RELAY,
       "path: sends that fail here count as unanswered ones");

    /* nothing at all from the peer for 25 s and the timeout: dead */
    test_until(&t, WG_PATH_SET_DIRECT, 100, 0, 0, &n);
    test_step(&t, 1000, 1000);
    ok(t.p.path == WG_PATH_DIRECT && t.p.probe == 0, "path: direct again");

    test_until(&t, WG_PATH_SET_RELAY, 100, 0, 0, &n);
    ok(n == 32, "path: no keepalive from the peer in 27 + 5 s: relay "
       "(after %ld s)", n);

    /* a new peer: its first handshake gets WireGuard's retry on top */
    test_peer_init(&t, WG_PATH_AUTO);
    test_step(&t, 0, 0);
    test_until(&t, WG_PATH_SET_RELAY, 60, 0, 148, &n);
    ok(n == 11, "path: a new peer waits 5 + 5 s for its first handshake");

    /* an idle peer: the probe fails all the same (roaming brings it back
     * once the peer's keepalive comes directly) */
    test_until(&t, WG_PATH_SET_DIRECT, 100, 0, 0, &n);
    t.o.on_relay = 1;
    test_until(&t, WG_PATH_KEEP, 100, 0, 0, &n);

    for (i = 0; i < 6; i++) {
        test_step(&t, 0, 0);
    }

    ok(t.p.path == WG_PATH_RELAY && t.p.retry == 2 * WG_PATH_RETRY,
       "path: an idle failed probe doubles the interval too");

    /* the device already has an endpoint (agent restart): kept */
    test_peer_init(&t, WG_PATH_AUTO);
    t.o.has_endpoint = 1;
    a = test_step(&t, 0, 0);
    ok(a == WG_PATH_KEEP && t.p.path == WG_PATH_DIRECT,
       "path: a direct endpoint already on the device is kept");
}


static void
test_path_relay(void)
{
    long              n = 0;
    int               bad, i;
    test_peer_t       t;
    wg_path_action_e  a;

    /* no advertised endpoint: relay, and never a probe */
    test_peer_init(&t, WG_PATH_AUTO);
    t.o.has_direct = 0;

    a = test_step(&t, 0, 0);
    ok(a == WG_PATH_SET_RELAY && t.p.path == WG_PATH_RELAY,
       "path: a peer without endpoints goes over the relay");

    bad = 0;

    for (i = 0; i < 600; i++) {
        bad |= (test_step(&t, 100, 100) != WG_PATH_KEEP);
    }

    ok(!bad && t.p.path == WG_PATH_RELAY, "path: and stays there");

    /* no relay for the peer (no AppID): direct, whatever happens */
    test_peer_init(&t, WG_PATH_AUTO);
    t.o.has_relay = 0;
    test_step(&t, 0, 0);
    ok(!test_until(&t, WG_PATH_SET_RELAY, 100, 0, 1000, &n)
       && t.p.path == WG_PATH_DIRECT,
       "path: without a relay endpoint a dead direct path is kept");
}


static void
test_path_forced(void)
{
    long              n = 0;
    int               bad, i;
    test_peer_t       t;
    wg_path_action_e  a;

    test_peer_init(&t, WG_PATH_RELAY);
    t.o.has_endpoint = 1;

    a = test_step(&t, 0, 0);
    ok(a == WG_PATH_SET_RELAY && t.p.path == WG_PATH_RELAY,
       "path: forced relay moves a direct peer to the relay");

    bad = 0;

    for (i = 0; i < 600; i++) {
        bad |= (test_step(&t, 100, 100) != WG_PATH_KEEP);
    }

    ok(!bad, "path: forced relay never probes direct");

    t.o.on_relay = 0;
    a = test_step(&t, 100, 0);
    ok(a == WG_PATH_SET_RELAY, "path: forced relay undoes a roam to direct");

    test_peer_init(&t, WG_PATH_DIRECT);
    t.o.on_relay = 1;
    t.o.has_endpoint = 1;

    a = test_step(&t, 0, 0);
    ok(a == WG_PATH_SET_DIRECT && t.p.path == WG_PATH_DIRECT,
       "path: forced direct leaves the relay");

    ok(!test_until(&t, WG_PATH_SET_RELAY, 100, 0, 1000, &n)
       && t.p.path == WG_PATH_DIRECT,
       "path: forced direct never falls back to the relay");

    t.o.on_relay = 1;
    a = test_step(&t, 100, 0);
    ok(a == WG_PATH_SET_DIRECT, "path: forced direct undoes a roam to the "
       "relay");
}


static void
test_path_counters(void)
{
    long              n = 0;
    test_peer_t       t;
    wg_path_mode_e    m;

    /*
     * bytes the relay brought are not direct ones: a peer whose answers
     * all come over the relay while the device sends directly is not
     * answering directly
     */
    test_peer_init(&t, WG_PATH_AUTO);
    t.o.has_endpoint = 1;
    test_step(&t, 100, 100);
    test_step(&t, 100, 100);

    t.o.relay_rx += 5000;
    t.o.rx_bytes += 5000;
    test_step(&t, 0, 1000);

    test_until(&t, WG_PATH_SET_RELAY, 20, 0, 1000, &n);
    ok(n == 5, "path: relayed bytes do not count as direct answers");

    /* counters that went back (the peer was added again): a new start */
    test_peer_init(&t, WG_PATH_AUTO);
    t.o.has_endpoint = 1;
    test_step(&t, 100000, 100000);
    t.o.rx_bytes = 0;
    t.o.tx_bytes = 0;
    ok(test_step(&t, 0, 0) == WG_PATH_KEEP && t.p.direct_rx == 0,
       "path: counters that restart are taken as a new start");

    ok(wg_path_parse("relay", &m) == 0 && m == WG_PATH_RELAY
       && wg_path_parse("auto", &m) == 0 && m == WG_PATH_AUTO
       && wg_path_parse("direct", &m) == 0 && m == WG_PATH_DIRECT
       && wg_path_parse("udp", &m) != 0
       && strcmp(wg_path_name(WG_PATH_RELAY), "relay") == 0,
       "path: names");
}


void
test_path(void)
{
    test_path_auto();
    test_path_relay();
    test_path_forced();
    test_path_counters();
}
