/*
 * wgctl unit tests: configuration files, good and malformed.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "test.h"


static int test_parse(const char *text, wg_device_t **out, char *err,
    size_t errlen);


static int
test_parse(const char *text, wg_device_t **out, char *err, size_t errlen)
{
    int           rc;
    char         *copy;
    size_t        len;
    wg_device_t  *dev;

    len = strlen(text);
    copy = malloc(len + 1);
    memcpy(copy, text, len + 1);

    dev = wg_device_new("wgtest");
    err[0] = '\0';
    rc = wg_config_parse(dev, copy, len, err, errlen);
    free(copy);

    if (out != NULL && rc == 0) {
        *out = dev;

    } else {
        wg_device_free(dev);
    }

    return rc;
}


void
test_config(void)
{
    int                   rc;
    char                  err[256], ip[64], big[70000];
    size_t                i;
    wg_device_t          *dev;
    const wg_peer_t      *p;
    static const struct {
        const char       *text;
        const char       *error;
        const char       *what;
    } bad[] = {
        { "[Interface]\nPrivateKey = abc\n", "line 2: invalid PrivateKey",
          "short private key" },
        { "[Interface]\nAddress = 10.0.0.1/32\n",
          "line 2: unknown key \"Address\"", "wg-quick key" },
        { "ListenPort = 1\n", "line 1: \"ListenPort\" outside of a section",
          "key before a section" },
        { "[Interface]\nListenPort = 65536\n",
          "line 2: invalid ListenPort \"65536\"", "port out of range" },
        { "[Interface]\nListenPort = -1\n",
          "line 2: invalid ListenPort \"-1\"", "negative port" },
        { "[Peer]\nPublicKey = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
          "Endpoint = example.com:51820\n",
          "line 3: invalid Endpoint \"example.com:51820\"",
          "hostname endpoint" },
        { "[Peer]\nPublicKey = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
          "Endpoint = 10.0.0.1\n", "line 3: invalid Endpoint",
          "endpoint without port" },
        { "[Peer]\nPublicKey = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
          "AllowedIPs = 10.0.0.0/33\n",
          "line 3: invalid AllowedIPs entry \"10.0.0.0/33\"", "cidr > 32" },
        { "[Peer]\nPublicKey = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
          "AllowedIPs = 10.0.0.0/8,,\n",
          "line 3: invalid AllowedIPs entry \"\"", "empty list item" },
        { "[Peer]\nPublicKey = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
          "PersistentKeepalive = 70000\n",
          "line 3: invalid PersistentKeepalive \"70000\"",
          "keepalive out of range" },
        { "[Peer]\nEndpoint = 10.0.0.1:1\n",
          "line 1: [Peer] without PublicKey", "peer without key" },
        { "[Peer]\nPublicKey = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
          "[Peer]\nPublicKey = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n",
          "a PublicKey appears twice", "duplicate peer" },
        { "[Interfaces]\n", "line 1: unknown section \"[Interfaces]\"",
          "unknown section" },
        { "[Interface]\nListenPort\n", "line 2: expected \"Key = Value\"",
          "line without '='" },
        { "[Peer]\nPublicKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
          "line 2: invalid PublicKey", "all-zero public key" },
    };

    rc = test_parse(
        "# a comment\n"
        "[Interface]\n"
        "PrivateKey = dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo= # alice\n"
        "ListenPort = 51820\r\n"
        "FwMark = 0x10\n", NULL, err, sizeof(err));
    ok(rc != 0 && strstr(err, "line 5: invalid FwMark \"0x10\"") != NULL,
       "hex fwmark rejected: %s", err);

    rc = test_parse(
        "# a comment\n"
        "[Interface]\n"
        "PrivateKey = dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo= # alice\n"
        "ListenPort = 51820\r\n"
        "\n"
        "[Peer]\n"
        "PublicKey = hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n"
        "Endpoint = 192.0.2.1:51820\n"
        "AllowedIPs = 10.1.0.0/16, 10.2.3.4/32 ,fd00::1/128\n"
        "persistentkeepalive = 25\n"
        "[peer]\n"
        "PublicKey = 3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=\n"
        "Endpoint = [2001:db8::1]:4242\n"
        "AllowedIPs = 10.9.9.9/24\n"
        "PresharedKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"
        "AllowedIPs = 10.8.0.1\n", &dev, err, sizeof(err));

    ok(rc == 0, "good configuration parses %s", err);

    if (rc != 0) {
        return;
    }

    ok((dev->flags & WG_DEV_HAS_PRIVATE_KEY) && dev->private_key[0] == 0x77
       && dev->private_key[31] == 0x2a, "PrivateKey read");
    ok((dev->flags & WG_DEV_HAS_LISTEN_PORT) && dev->listen_port == 51820,
       "ListenPort read (CRLF line)");
    ok(dev->npeers == 2, "two peers");

    p = &dev->peers[0];
    ok(p->public_key[0] == 0x85 && p->endpoint.sa.sa_family == AF_INET
       && ntohs(p->endpoint.sin.sin_port) == 51820, "peer 1 key, endpoint");
    ok(p->nallowedips == 3 && (p->flags & WG_PEER_HAS_KEEPALIVE)
       && p->keepalive == 25, "peer 1 allowed IPs and keepalive");

    wg_allowedip_format(ip, sizeof(ip), &p->allowedips[2]);
    ok(strcmp(ip, "fd00::1/128") == 0, "IPv6 allowed IP %s", ip);

    p = &dev->peers[1];
    wg_allowedip_format(ip, sizeof(ip), &p->allowedips[0]);
    ok(strcmp(ip, "10.9.9.0/24") == 0, "host bits cleared: %s", ip);
    ok(p->nallowedips == 2 && p->endpoint.sa.sa_family == AF_INET6
       && ntohs(p->endpoint.sin6.sin6_port) == 4242,
       "peer 2: repeated AllowedIPs add up, IPv6 endpoint");
    ok((p->flags & WG_PEER_HAS_PRESHARED_KEY) && p->preshared_key[0] == 1,
       "PresharedKey read");

    wg_device_free(dev);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rc = test_parse(bad[i].text, NULL, err, sizeof(err));
        ok(rc != 0 && strstr(err, bad[i].error) != NULL,
           "rejects %s: %s", bad[i].what, err);
    }

    rc = test_parse("[Interface]\nPrivateKey = "
                    "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LC==\n",
                    NULL, err, sizeof(err));
    ok(rc != 0 && strstr(err, "dwdt") == NULL,
       "a bad private key is not echoed: %s", err);

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    rc = test_parse(big, NULL, err, sizeof(err));
    ok(rc != 0 && strstr(err, "line 1: line too long") != NULL,
       "overlong line rejected");

    {
        char  nul[] = "[Interface]\0ListenPort = 1\n";

        dev = wg_device_new("wgtest");
        rc = wg_config_parse(dev, nul, sizeof(nul) - 1, err, sizeof(err));
        ok(rc != 0, "NUL byte rejected");
        wg_device_free(dev);
    }

    rc = test_parse("", &dev, err, sizeof(err));
    ok(rc == 0 && dev->npeers == 0 && dev->flags == 0, "empty file is empty");
    if (rc == 0) {
        wg_device_free(dev);
    }
}
