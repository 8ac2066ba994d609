/*
 * wgctl unit tests: the relay's wire (relay.h): the inbound request and
 * its verdict, the mesh's response, error texts, frames and datagrams.
 * The engine itself runs against real nginx and wireguard-go in
 * t/wgctl-relay.t.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "test.h"
#include "relay.h"


#define APP_A   "0123456789abcdef0123456789abcdef01234567"
#define KEY_A   "0000000100000000000000000000000000000000" \
                "00000000000000000000005a"
#define KEY_B   "0000000200000000000000000000000000000000" \
                "00000000000000000000005a"


static long
test_request(const char *text, wg_relay_request_t *rq)
{
    return wg_relay_parse_request(text, strlen(text), rq);
}


static int
test_verdict(const char *text, const char *peer_app, const char **why)
{
    uint8_t             self[32];
    wg_relay_request_t  rq;

    test_key(self, 2);

    if (test_request(text, &rq) <= 0) {
        *why = "unparsed";
        return -1;
    }

    return wg_relay_request_verdict(&rq, self, peer_app, why);
}


static void
test_relay_request(void)
{
    int                  st;
    long                 n;
    char                 big[WG_RELAY_HEADERS_MAX + 64];
    uint8_t              key[32];
    const char          *why, *good;
    wg_relay_request_t   rq;

    good = "GET /.dstack/wg-relay HTTP/1.1\r\n"
           "Host: relay\r\n"
           "upgrade: Dstack-WG-Relay\r\n"
           "Connection: upgrade\r\n"
           "WG-Relay-From: " KEY_A "\r\n"
           "wg-relay-to: " KEY_B "\r\n"
           "X-Dstack-App-Id: " APP_A "\r\n"
           "\r\n\x00\x00";

    n = test_request(good, &rq);
    ok(n == (long) strlen(good) && rq.get && rq.path && rq.upgrade
       && rq.has_from && rq.has_to && rq.has_app && !rq.bad,
       "request: parsed, headers case-insensitive, length before the "
       "frames");

    test_key(key, 1);
    ok(memcmp(rq.from, key, 32) == 0, "request: From decoded");
    test_key(key, 2);
    ok(memcmp(rq.to, key, 32) == 0, "request: To decoded");
    ok(strcmp(rq.app, APP_A) == 0, "request: app id kept");

    ok(test_request("GET /.dstack/wg-relay HTTP/1.1\r\nHost: x\r\n", &rq)
       == 0, "request: incomplete headers need more");

    ok(wg_relay_parse_request(good, 20, &rq) == 0,
       "request: a partial request line needs more");

    memset(big, 'a', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    ok(wg_relay_parse_request(big, sizeof(big), &rq) == -1,
       "request: headers over 8 KiB are refused");

    ok(test_request("GARBAGE\r\n\r\n", &rq) == -1,
       "request: a request line without spaces is malformed");
    ok(test_request("GET /.dstack/wg-relay SPDY\r\n\r\n", &rq) == -1,
       "request: not HTTP/1.x is malformed");
    ok(test_request("GET /.dstack/wg-relay HTTP/1.1\r\nno colon\r\n\r\n",
                    &rq) == -1,
       "request: a header line without a colon is malformed");
    ok(test_request("GET /.dstack/wg-relay HTTP/1.1\r\nUpgrade : x\r\n\r\n",
                    &rq) == -1,
       "request: space before the colon is malformed");

    /* verdicts */

    st = test_verdict(good, APP_A, &why);
    ok(st == 101 && why == NULL, "verdict: accepted");

    st = test_verdict(good, "0123456789ABCDEF0123456789ABCDEF01234567",
                      &why);
    ok(st == 101, "verdict: app ids compare case-insensitively");

    st = test_verdict(good, NULL, &why);
    ok(st == 403 && strcmp(why, "unknown peer") == 0,
       "verdict: From not in the map: 403");

    st = test_verdict(good, "ffffffffffffffffffffffffffffffffffffffff",
                      &why);
    ok(st == 403 && strstr(why, "app id") != NULL,
       "verdict: another app: 403");

    st = test_verdict("GET /.dstack/wg-relay HTTP/1.1\r\n"
                      "Upgrade: dstack-wg-relay\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-To: " KEY_A "\r\n"
                      "X-Dstack-App-Id: " APP_A "\r\n\r\n", APP_A, &why);
    ok(st == 403 && strstr(why, "not addressed") != NULL,
       "verdict: To another key: 403");

    st = test_verdict("GET /.dstack/wg-relay HTTP/1.1\r\n"
                      "Upgrade: websocket\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-To: " KEY_B "\r\n"
                      "X-Dstack-App-Id: " APP_A "\r\n\r\n", APP_A, &why);
    ok(st == 400, "verdict: another Upgrade: 400");

    st = test_verdict("GET /.dstack/wg-relay HTTP/1.1\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-To: " KEY_B "\r\n"
                      "X-Dstack-App-Id: " APP_A "\r\n\r\n", APP_A, &why);
    ok(st == 400, "verdict: no Upgrade: 400");

    st = test_verdict("POST /.dstack/wg-relay HTTP/1.1\r\n"
                      "Upgrade: dstack-wg-relay\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-To: " KEY_B "\r\n"
                      "X-Dstack-App-Id: " APP_A "\r\n\r\n", APP_A, &why);
    ok(st == 400, "verdict: POST: 400");

    st = test_verdict("GET /.dstack/wg-relay?x=1 HTTP/1.1\r\n"
                      "Upgrade: dstack-wg-relay\r\n\r\n", APP_A, &why);
    ok(st == 404, "verdict: another path: 404");

    st = test_verdict("GET /.dstack/wg-relay HTTP/1.1\r\n"
                      "Upgrade: dstack-wg-relay\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-To: " KEY_B "\r\n\r\n", APP_A, &why);
    ok(st == 403 && strstr(why, "app id") != NULL,
       "verdict: no X-Dstack-App-Id: 403");

    st = test_verdict("GET /.dstack/wg-relay HTTP/1.1\r\n"
                      "Upgrade: dstack-wg-relay\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-To: " KEY_B "\r\n"
                      "X-Dstack-App-Id: " APP_A "\r\n"
                      "X-Dstack-App-Id: " APP_A "\r\n\r\n", APP_A, &why);
    ok(st == 400, "verdict: a repeated X-Dstack-App-Id: 400");

    st = test_verdict("GET /.dstack/wg-relay HTTP/1.1\r\n"
                      "Upgrade: dstack-wg-relay\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-To: " KEY_B "\r\n"
                      "X-Dstack-App-Id: " APP_A "\r\n\r\n", APP_A, &why);
    ok(st == 400, "verdict: a repeated From: 400");

    st = test_verdict("GET /.dstack/wg-relay HTTP/1.1\r\n"
                      "Upgrade: dstack-wg-relay\r\n"
                      "WG-Relay-From: xyz\r\n"
                      "WG-Relay-To: " KEY_B "\r\n"
                      "X-Dstack-App-Id: " APP_A "\r\n\r\n", APP_A, &why);
    ok(st == 400, "verdict: a From that is no hex key: 400");

    st = test_verdict("GET /.dstack/wg-relay HTTP/1.1\r\n"
                      "Upgrade: dstack-wg-relay\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-To: " KEY_B "\r\n"
                      "X-Dstack-App-Id: " APP_A "00\r\n\r\n", APP_A, &why);
    ok(st == 400, "verdict: an app id over 40 characters: 400");

    st = test_verdict("GET /.dstack/wg-relay HTTP/1.1\r\n"
                      "Upgrade: dstack-wg-relay\r\n"
                      "WG-Relay-From: " KEY_A "\r\n"
                      "WG-Relay-To: " KEY_B "\r\n"
                      "X-Dstack-App-Id: 0123456789abcdef0123456789abcdef0123"
                      "456g\r\n\r\n", APP_A, &why);
    ok(st == 400, "verdict: an app id that is no hex: 400");
}


static void
test_relay_response(void)
{
    int          status;
    long         n, clen;
    char         text[32];
    const char  *r;

    r = "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: dstack-wg-relay\r\nConnection: upgrade\r\n\r\n\x00";
    n = wg_relay_parse_response(r, strlen(r) + 1, &status, &clen);
    ok(n == (long) strlen(r) && status == 101 && clen == -1,
       "response: 101, length excludes what follows");

    r = "HTTP/1.1 403 Forbidden\r\nContent-Length: 27\r\n\r\n";
    n = wg_relay_parse_response(r, strlen(r), &status, &clen);
    ok(n == (long) strlen(r) && status == 403 && clen == 27,
       "response: status and Content-Length");

    ok(wg_relay_parse_response("HTTP/1.1 101 Swi", 16, &status, &clen) == 0,
       "response: incomplete needs more");

    r = "SSH-2.0-OpenSSH\r\n\r\n";
    ok(wg_relay_parse_response(r, strlen(r), &status, &clen) == -1,
       "response: not HTTP is malformed");

    r = "HTTP/1.1 200 OK\r\nContent-Length: x1\r\n\r\n";
    ok(wg_relay_parse_response(r, strlen(r), &status, &clen) == -1,
       "response: a bad Content-Length is malformed");

    r = "{\"error\":\"peer refused \\\"x\\\"\",\"code\":1}";
    wg_relay_error_text(r, strlen(r), text, sizeof(text));
    ok(strcmp(text, "peer refused \"x\"") == 0, "error text: JSON error");

    r = "<html>\r\n<b>bad</b>";
    wg_relay_error_text(r, strlen(r), text, sizeof(text));
    ok(strcmp(text, "<html>") == 0, "error text: first line otherwise");

    r = "{\"error\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x01\"}";
    wg_relay_error_text(r, strlen(r), text, sizeof(text));
    ok(strlen(text) == sizeof(text) - 1, "error text: bounded");

    r = "{\"error\":\"a\x01\"}";
    wg_relay_error_text(r, strlen(r), text, sizeof(text));
    ok(strcmp(text, "a?") == 0, "error text: control bytes replaced");
}


static void
test_relay_frames(void)
{
    size_t   dlen;
    uint8_t  buf[70000], d[148];

    wg_relay_frame_header(buf, 1420);
    ok(buf[0] == 0x05 && buf[1] == 0x8c, "frame: big-endian length");

    wg_relay_frame_header(buf, WG_RELAY_DATAGRAM_MAX);
    ok(buf[0] == 0xff && buf[1] == 0xff, "frame: the largest datagram");

    ok(wg_relay_frame_parse(buf, 1, &dlen) == 0,
       "frame: one byte needs more");
    ok(wg_relay_frame_parse(buf, 2 + 65534, &dlen) == 0,
       "frame: a short body needs more");
    ok(wg_relay_frame_parse(buf, 2 + 65535, &dlen) == 1 && dlen == 65535,
       "frame: a whole 65535-byte frame");

    buf[0] = 0;
    buf[1] = 0;
    ok(wg_relay_frame_parse(buf, 2, &dlen) == 1 && dlen == 0,
       "frame: a keepalive");

    memset(d, 0, sizeof(d));
    d[0] = 1;
    ok(wg_relay_datagram_valid(d, 148), "datagram: handshake initiation");
    ok(!wg_relay_datagram_valid(d, 147), "datagram: initiation of wrong "
       "size");
    d[0] = 2;
    ok(wg_relay_datagram_valid(d, 92), "datagram: handshake response");
    d[0] = 3;
    ok(wg_relay_datagram_valid(d, 64), "datagram: cookie reply");
    d[0] = 4;
    ok(wg_relay_datagram_valid(d, 32) && !wg_relay_datagram_valid(d, 31),
       "datagram: transport data, at least 32 bytes");
    d[0] = 5;
    ok(!wg_relay_datagram_valid(d, 64), "datagram: unknown type");
    d[0] = 4;
    d[2] = 1;
    ok(!wg_relay_datagram_valid(d, 64), "datagram: reserved bytes set");
    ok(!wg_relay_datagram_valid(d, 0), "datagram: empty");
}


/* reads what arrives within ms; 0 on EOF, -1 on nothing or error */

static ssize_t
test_read(int fd, char *buf, size_t size, int ms)
{
    struct pollfd  pfd;

    pfd.fd = fd;
    pfd.events = POLLIN;

    if (poll(&pfd, 1, ms) != 1) {
        return -1;
    }

    return read(fd, buf, size);
}


/* an inbound tunnel from a peer, through the engine's Unix socket */

static int
test_dial_in(const char *path, const wg_relay_peer_t *peer,
    const uint8_t *self)
{
    int                 fd;
    char                req[512], from[65], to[65], buf[256];
    ssize_t             n;
    struct sockaddr_un  sun;

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd == -1) {
        return -1;
    }

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);

    wg_key_to_hex(from, peer->key);
    wg_key_to_hex(to, self);

    n = snprintf(req, sizeof(req),
                 "GET /.dstack/wg-relay HTTP/1.1\r\n"
                 "Upgrade: dstack-wg-relay\r\n"
                 "WG-Relay-From: %s\r\nWG-Relay-To: %s\r\n"
                 "X-Dstack-App-Id: %s\r\n\r\n", from, to, peer->app);

    if (connect(fd, (struct sockaddr *) &sun, sizeof(sun)) == -1
        || write(fd, req, n) != n
        || (n = test_read(fd, buf, sizeof(buf) - 1, 5000)) <= 0)
    {
        close(fd);
        return -1;
    }

    buf[n] = '\0';

    if (strncmp(buf, "HTTP/1.1 101 ", 13) != 0) {
        close(fd);
        return -1;
    }

    return fd;
}


/* the engine's peer table: endpoints made, kept, dropped (loopback only) */

static void
test_relay_table(void)
{
    int                 rc, same, distinct, gone, fd, fd2;
    char                dir[] = "/tmp/wgctl-relay-XXXXXX", path[64];
    char                buf[64];
    size_t              i;
    uint16_t           *ports;
    wg_relay_t         *relay;
    wg_relay_conf_t     conf;
    wg_relay_peer_t    *peers;
    wg_relay_stats_t    st;
    struct sockaddr_in  sin;

    if (mkdtemp(dir) == NULL) {
        ok(0, "table: mkdtemp: %s", strerror(errno));
        return;
    }

    snprintf(path, sizeof(path), "%s/relay.sock", dir);

    memset(&conf, 0, sizeof(conf));
    conf.mesh_host = "127.0.0.1";
    conf.mesh_port = 9;
    conf.listen_path = path;
    conf.listen_gid = -1;
    conf.device_port = 9;
    test_key(conf.self_key, 999999);

    peers = calloc(1000, sizeof(wg_relay_peer_t));
    ports = calloc(1000, sizeof(uint16_t));

    rc = wg_relay_start(&relay, &conf);
    ok(rc == 0 && access(path, F_OK) == 0, "table: engine started, "
       "listening");

    if (rc != 0 || peers == NULL || ports == NULL) {
        goto done;
    }

    /* in reverse key order: the engine sorts */

    for (i = 0; i < 1000; i++) {
        test_key(peers[i].key, 1000 - i);
        snprintf(peers[i].app, sizeof(peers[i].app), "%040zx", i);
    }

    ok(wg_relay_set_peers(relay, peers, 1000) == 0, "table: 1000 peers set");

    distinct = 1;

    for (i = 0; i < 1000; i++) {
        if (wg_relay_endpoint(relay, peers[i].key, &sin) != 0
            || sin.sin_addr.s_addr != htonl(INADDR_LOOPBACK)
            || sin.sin_port == 0)
        {
            distinct = 0;
            break;
        }

        ports[i] = ntohs(sin.sin_port);

        if (i > 0 && ports[i] == ports[i - 1]) {
            distinct = 0;
        }
    }

    ok(distinct, "table: each peer has its own endpoint on 127.0.0.1");

    /* the even ones stay, the odd ones go, 500 new ones come */

    for (i = 0; i < 1000; i++) {
        if (i % 2) {
            test_key(peers[i].key, 5000 + i);
        }
    }

    ok(wg_relay_set_peers(relay, peers, 1000) == 0, "table: replaced");

    same = 1;
    gone = 1;

    for (i = 0; i < 1000; i += 2) {
        if (wg_relay_endpoint(relay, peers[i].key, &sin) != 0
            || ntohs(sin.sin_port) != ports[i])
        {
            same = 0;
        }

        test_key(peers[i + 1].key, 1000 - (i + 1));

        if (wg_relay_endpoint(relay, peers[i + 1].key, &sin) != -ENOENT
            || wg_relay_stats(relay, peers[i + 1].key, &st) != -ENOENT)
        {
            gone = 0;
        }

        test_key(peers[i + 1].key, 5000 + i + 1);
    }

    ok(same, "table: peers that stay keep their endpoint");
    ok(gone, "table: peers removed are gone (-ENOENT)");

    ok(wg_relay_stats(relay, peers[1].key, &st) == 0 && st.tunnels == 0
       && st.rx_packets == 0 && st.last_rx == 0, "table: a new peer's "
       "stats are zero");

    peers[3] = peers[5];
    ok(wg_relay_set_peers(relay, peers, 1000) == -EINVAL
       && wg_relay_endpoint(relay, peers[7].key, &sin) == 0,
       "table: a repeated key is refused, the table unchanged");

    test_key(peers[3].key, 5003);

    /* a peer that leaves the table loses its inbound tunnel; one that
       stays keeps it */

    fd = test_dial_in(path, &peers[0], conf.self_key);
    fd2 = test_dial_in(path, &peers[2], conf.self_key);
    ok(fd != -1 && fd2 != -1, "table: inbound tunnels from two peers");

    ok(wg_relay_set_peers(relay, peers + 2, 998) == 0
       && wg_relay_stats(relay, peers[2].key, &st) == 0 && st.tunnels == 1,
       "table: one peer removed, the other's tunnel counted");

    ok(fd != -1 && test_read(fd, buf, sizeof(buf), 5000) == 0,
       "table: the removed peer's inbound tunnel is closed");

    ok(fd2 != -1 && test_read(fd2, buf, sizeof(buf), 500) == -1,
       "table: the other's stays open");

    if (fd != -1) {
        close(fd);
    }

    if (fd2 != -1) {
        close(fd2);
    }

    ok(wg_relay_set_peers(relay, NULL, 0) == 0
       && wg_relay_endpoint(relay, peers[2].key, &sin) == -ENOENT,
       "table: emptied");

    wg_relay_stop(relay);
    ok(access(path, F_OK) != 0, "table: stopped, socket removed");

done:

    free(peers);
    free(ports);
    unlink(path);
    rmdir(dir);
}


void
test_relay(void)
{
    test_relay_request();
    test_relay_response();
    test_relay_frames();
    test_relay_table();
}
