/*
 * wgctl unit tests: the UAPI text protocol, without a socket.
 */


#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "uapi.h"


static int test_get(const char *text, wg_device_t **out);


static int
test_get(const char *text, wg_device_t **out)
{
    int           rc;
    char         *copy;
    wg_device_t  *dev;

    copy = strdup(text);
    dev = wg_device_new("wgtest");
    rc = wg_uapi_parse_get(dev, copy, strlen(copy));
    free(copy);

    if (rc == 0 && out != NULL) {
        *out = dev;

    } else {
        wg_device_free(dev);
    }

    return rc;
}


void
test_uapi(void)
{
    int              rc;
    char            *text;
    size_t           len;
    wg_peer_t       *p;
    wg_device_t     *dev;
    wg_allowedip_t   aip;

    rc = test_get(
        "private_key=77076d0a7318a57d3c16c17251b26645"
        "df4c2f87ebc0992ab177fba51db92c2a\n"
        "listen_port=51820\n"
        "public_key=8520f0098930a754748b7ddcb43ef75a"
        "0dbf3a0d26381af4eba4a98eaa9b4e6a\n"
        "preshared_key=0000000000000000000000000000000000000000000000000000"
        "000000000000\n"
        "protocol_version=1\n"
        "endpoint=192.0.2.1:51820\n"
        "last_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=5\n"
        "tx_bytes=1000\n"
        "rx_bytes=2000\n"
        "persistent_keepalive_interval=25\n"
        "allowed_ip=10.0.0.2/32\n"
        "allowed_ip=fd00::/64\n"
        "errno=0\n"
        "\n", &dev);

    ok(rc == 0, "get answer parsed");

    if (rc == 0) {
        p = &dev->peers[0];
        ok(dev->listen_port == 51820 && (dev->flags & WG_DEV_HAS_PUBLIC_KEY)
           && dev->public_key[0] == 0x85 && dev->npeers == 1,
           "device fields; public key derived from the private key");
        ok(p->public_key[0] == 0x85 && p->nallowedips == 2
           && p->keepalive == 25 && p->rx_bytes == 2000
           && p->tx_bytes == 1000
           && p->last_handshake.tv_sec == 1700000000
           && !(p->flags & WG_PEER_HAS_PRESHARED_KEY)
           && p->endpoint.sa.sa_family == AF_INET, "peer fields");
        wg_device_free(dev);
    }

    ok(test_get("errno=19\n\n", NULL) == -19, "errno passed on");
    ok(test_get("listen_port=70000\nerrno=0\n\n", NULL) == -EPROTO,
       "port out of range refused");
    ok(test_get("listen_port=1\nerrno=0\n", NULL) == -EPROTO,
       "answer without its blank line refused");
    ok(test_get("public_key=abc\nerrno=0\n\n", NULL) == -EPROTO,
       "bad key refused");
    ok(test_get("garbage\n\n", NULL) == -EPROTO, "line without '=' refused");
    ok(test_get("future_key=1\nerrno=0\n\n", NULL) == 0,
       "unknown keys ignored");

    dev = wg_device_new("wgtest");
    dev->flags = WG_DEV_HAS_LISTEN_PORT | WG_DEV_REPLACE_PEERS;
    dev->listen_port = 1234;

    p = wg_device_add_peer(dev, NULL);
    test_key(p->public_key, 1);
    p->flags = WG_PEER_REMOVE;

    p = wg_device_add_peer(dev, NULL);
    test_key(p->public_key, 2);
    p->flags = WG_PEER_REPLACE_ALLOWEDIPS | WG_PEER_HAS_KEEPALIVE;
    p->keepalive = 0;
    wg_endpoint_parse(&p->endpoint, "[2001:db8::1]:51820");
    wg_allowedip_parse(&aip, "100.64.0.1/32");
    wg_peer_add_allowedip(p, &aip);

    rc = wg_uapi_build_set(dev, &text, &len);
    ok(rc == 0 && strcmp(text,
        "set=1\nlisten_port=1234\nreplace_peers=true\n"
        "public_key=000000010000000000000000000000000000000000000000000000"
        "000000005a\nremove=true\n"
        "public_key=000000020000000000000000000000000000000000000000000000"
        "000000005a\nendpoint=[2001:db8::1]:51820\n"
        "persistent_keepalive_interval=0\nreplace_allowed_ips=true\n"
        "allowed_ip=100.64.0.1/32\n\n") == 0, "set request text");

    if (rc == 0) {
        free(text);
    }

    wg_device_free(dev);
}
