/*
 * wgctl: WireGuard keys, their base64 and hex forms, X25519 through
 * OpenSSL.  Encodings are strict: exactly one spelling per key.
 */


#include <stdint.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "wgdev.h"


static int wg_b64_value(int c);
static int wg_hex_value(int c);


static const char  wg_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


void
wg_memzero(void *p, size_t n)
{
    /*
     * glibc's: never optimized away, and memset's speed (a volatile byte
     * loop was 13 % of "wgctl syncconf" of 10k peers: it also wipes
     * buffers and arrays of megabytes)
     */
    explicit_bzero(p, n);
}


static int
wg_b64_value(int c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '+') {
        return 62;
    }

    if (c == '/') {
        return 63;
    }

    return -1;
}


static int
wg_hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


void
wg_key_to_base64(char *out, const uint8_t *key)
{
    size_t    i, o;
    uint32_t  v;

    o = 0;

    for (i = 0; i + 3 <= WG_KEY_SIZE; i += 3) {
        v = (uint32_t) key[i] << 16 | (uint32_t) key[i + 1] << 8 | key[i + 2];
        out[o++] = wg_b64_alphabet[(v >> 18) & 0x3f];
        out[o++] = wg_b64_alphabet[(v >> 12) & 0x3f];
        out[o++] = wg_b64_alphabet[(v >> 6) & 0x3f];
        out[o++] = wg_b64_alphabet[v & 0x3f];
    }

    /* 32 = 3 * 10 + 2: the last group has two bytes and one '=' */
    v = (uint32_t) key[30] << 16 | (uint32_t) key[31] << 8;
    out[o++] = wg_b64_alphabet[(v >> 18) & 0x3f];
    out[o++] = wg_b64_alphabet[(v >> 12) & 0x3f];
    out[o++] = wg_b64_alphabet[(v >> 6) & 0x3f];
    out[o++] = '=';
    out[o] = '\0';
}


int
wg_key_from_base64(uint8_t *key, const char *text)
{
    int       c[4], k;
    size_t    i, o;
    uint8_t   tmp[WG_KEY_SIZE];
    uint32_t  v;

    if (strlen(text) != WG_KEY_B64_LEN || text[WG_KEY_B64_LEN - 1] != '=') {
        return -1;
    }

    o = 0;

    for (i = 0; i < WG_KEY_B64_LEN; i += 4) {

        for (k = 0; k < 4; k++) {
            c[k] = (i + k == WG_KEY_B64_LEN - 1)
                   ? 0 : wg_b64_value(text[i + k]);
            if (c[k] < 0) {
                wg_memzero(tmp, sizeof(tmp));
                return -1;
            }
        }

        v = (uint32_t) c[0] << 18 | (uint32_t) c[1] << 12
            | (uint32_t) c[2] << 6 | (uint32_t) c[3];

        tmp[o++] = (v >> 16) & 0xff;
        tmp[o++] = (v >> 8) & 0xff;

        if (o < WG_KEY_SIZE) {
            tmp[o++] = v & 0xff;

        } else if (v & 0xff) {
            /* non-canonical: the bits after the last byte must be zero */
            wg_memzero(tmp, sizeof(tmp));
            return -1;
        }
    }

    memcpy(key, tmp, WG_KEY_SIZE);
    wg_memzero(tmp, sizeof(tmp));

    return 0;
}


void
wg_key_to_hex(char *out, const uint8_t *key)
{
    size_t             i;
    static const char  hex[] = "0123456789abcdef";

    for (i = 0; i < WG_KEY_SIZE; i++) {
        out[2 * i] = hex[key[i] >> 4];
        out[2 * i + 1] = hex[key[i] & 0x0f];
    }

    out[WG_KEY_HEX_LEN] = '\0';
}


int
wg_key_from_hex(uint8_t *key, const char *text)
{
    int      hi, lo;
    size_t   i;
    uint8_t  tmp[WG_KEY_SIZE];

    if (strlen(text) != WG_KEY_HEX_LEN) {
        return -1;
    }

    for (i = 0; i < WG_KEY_SIZE; i++) {
        hi = wg_hex_value(text[2 * i]);
        lo = wg_hex_value(text[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            wg_memzero(tmp, sizeof(tmp));
            return -1;
        }

        tmp[i] = (uint8_t) (hi << 4 | lo);
    }

    memcpy(key, tmp, WG_KEY_SIZE);
    wg_memzero(tmp, sizeof(tmp));

    return 0;
}


int
wg_key_is_zero(const uint8_t *key)
{
    size_t            i;
    volatile uint8_t  acc;

    acc = 0;

    for (i = 0; i < WG_KEY_SIZE; i++) {
        acc |= key[i];
    }

    return acc == 0;
}


/* X25519 ignores these bits; the kernel and wireguard-go store it clamped */

void
wg_key_clamp(uint8_t *out, const uint8_t *key)
{
    memmove(out, key, WG_KEY_SIZE);
    out[0] &= 248;
    out[31] = (out[31] & 127) | 64;
}


int
wg_key_generate(uint8_t *key)
{
    if (RAND_priv_bytes(key, WG_KEY_SIZE) != 1) {
        ERR_clear_error();
        return -1;
    }

    /* clamp as wg genkey does, so that both print the same kind of key */
    wg_key_clamp(key, key);

    return 0;
}


int
wg_key_public(uint8_t *pub, const uint8_t *priv)
{
    int        rc;
    size_t     len;
    EVP_PKEY  *pkey;

    rc = -1;

    pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv,
                                        WG_KEY_SIZE);
    if (pkey == NULL) {
        goto done;
    }

    len = WG_KEY_SIZE;

    if (EVP_PKEY_get_raw_public_key(pkey, pub, &len) == 1
        && len == WG_KEY_SIZE)
    {
        rc = 0;
    }

done:

    EVP_PKEY_free(pkey);
    ERR_clear_error();

    return rc;
}
