/*
 * wgctl: WireGuard keys, their base64 and hex forms, X25519 through
 * OpenSSL.  Encodings are strict (exactly one spelling per key; hex of
 * either case is read, lower case written) and in constant time.
 */


#include <stdint.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "wgdev.h"


static int wg_b64_encode_6(int v);
static int wg_b64_decode_6(int c);
static int wg_hex_encode_4(int v);
static int wg_hex_decode_4(int c);


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


/*
 * The encodings run in constant time: a key's bytes choose no table entry
 * and no branch.  WG_CT_IN(c, lo, hi) is -1 when lo <= c <= hi, else 0,
 * for c, lo, hi in 0..255: both differences are negative only inside the
 * range, and an arithmetic shift spreads the sign.  Only the validity of
 * the whole text, which its spelling shows anyway, decides a branch.
 */

#define WG_CT_IN(c, lo, hi)  ((((lo) - 1 - (c)) & ((c) - ((hi) + 1))) >> 8)

/* the alphabet A-Z a-z 0-9 + /, as offsets added under masks */

static int
wg_b64_encode_6(int v)
{
    int  c;

    c = 'A' + v;
    c += ((25 - v) >> 8) & ('a' - 'A' - 26);
    c += ((51 - v) >> 8) & ('0' - 'a' - 26);
    c += ((61 - v) >> 8) & ('+' - '0' - 10);
    c += ((62 - v) >> 8) & ('/' - '+' - 1);

    return c;
}


/* 0..63, or -1 for a character outside the alphabet */

static int
wg_b64_decode_6(int c)
{
    int  v;

    v = -1;
    v += WG_CT_IN(c, 'A', 'Z') & (c - 'A' + 1);
    v += WG_CT_IN(c, 'a', 'z') & (c - 'a' + 26 + 1);
    v += WG_CT_IN(c, '0', '9') & (c - '0' + 52 + 1);
    v += WG_CT_IN(c, '+', '+') & (62 + 1);
    v += WG_CT_IN(c, '/', '/') & (63 + 1);

    return v;
}


static int
wg_hex_encode_4(int v)
{
    return '0' + v + (((9 - v) >> 8) & ('a' - '0' - 10));
}


/* 0..15 from either case, or -1 */

static int
wg_hex_decode_4(int c)
{
    int  v;

    v = -1;
    v += WG_CT_IN(c, '0', '9') & (c - '0' + 1);
    v += WG_CT_IN(c, 'a', 'f') & (c - 'a' + 10 + 1);
    v += WG_CT_IN(c, 'A', 'F') & (c - 'A' + 10 + 1);

    return v;
}


void
wg_key_to_base64(char *out, const uint8_t *key)
{
    size_t    i, o;
    uint32_t  v;

    o = 0;

    for (i = 0; i + 3 <= WG_KEY_SIZE; i += 3) {
        v = (uint32_t) key[i] << 16 | (uint32_t) key[i + 1] << 8 | key[i + 2];
        out[o++] = (char) wg_b64_encode_6((v >> 18) & 0x3f);
        out[o++] = (char) wg_b64_encode_6((v >> 12) & 0x3f);
        out[o++] = (char) wg_b64_encode_6((v >> 6) & 0x3f);
        out[o++] = (char) wg_b64_encode_6(v & 0x3f);
    }

    /* 32 = 3 * 10 + 2: the last group has two bytes and one '=' */
    v = (uint32_t) key[30] << 16 | (uint32_t) key[31] << 8;
    out[o++] = (char) wg_b64_encode_6((v >> 18) & 0x3f);
    out[o++] = (char) wg_b64_encode_6((v >> 12) & 0x3f);
    out[o++] = (char) wg_b64_encode_6((v >> 6) & 0x3f);
    out[o++] = '=';
    out[o] = '\0';
}


int
wg_key_from_base64(uint8_t *key, const char *text)
{
    int       c, k, bad;
    size_t    i, o;
    uint8_t   tmp[WG_KEY_SIZE];
    uint32_t  v;

    if (strlen(text) != WG_KEY_B64_LEN || text[WG_KEY_B64_LEN - 1] != '=') {
        return -1;
    }

    bad = 0;
    o = 0;

    for (i = 0; i < WG_KEY_B64_LEN; i += 4) {
        v = 0;

        for (k = 0; k < 4; k++) {
            /* the '=' at the end stands for six zero bits */
            c = (i + k == WG_KEY_B64_LEN - 1)
                ? 0 : wg_b64_decode_6((unsigned char) text[i + k]);
            bad |= c;
            v = v << 6 | (uint32_t) (c & 0x3f);
        }

        tmp[o++] = (v >> 16) & 0xff;
        tmp[o++] = (v >> 8) & 0xff;

        if (o < WG_KEY_SIZE) {
            tmp[o++] = v & 0xff;

        } else {
            /* canonical: the bits after the last byte are zero */
            bad |= -(int) (v & 0xff);
        }
    }

    /* any -1 above left bad negative */
    if (bad < 0) {
        wg_memzero(tmp, sizeof(tmp));
        return -1;
    }

    memcpy(key, tmp, WG_KEY_SIZE);
    wg_memzero(tmp, sizeof(tmp));

    return 0;
}


void
wg_key_to_hex(char *out, const uint8_t *key)
{
    size_t  i;

    for (i = 0; i < WG_KEY_SIZE; i++) {
        out[2 * i] = (char) wg_hex_encode_4(key[i] >> 4);
        out[2 * i + 1] = (char) wg_hex_encode_4(key[i] & 0x0f);
    }

    out[WG_KEY_HEX_LEN] = '\0';
}


int
wg_key_from_hex(uint8_t *key, const char *text)
{
    int      hi, lo, bad;
    size_t   i;
    uint8_t  tmp[WG_KEY_SIZE];

    if (strlen(text) != WG_KEY_HEX_LEN) {
        return -1;
    }

    bad = 0;

    for (i = 0; i < WG_KEY_SIZE; i++) {
        hi = wg_hex_decode_4((unsigned char) text[2 * i]);
        lo = wg_hex_decode_4((unsigned char) text[2 * i + 1]);
        bad |= hi | lo;

        tmp[i] = (uint8_t) ((hi & 0x0f) << 4 | (lo & 0x0f));
    }

    if (bad < 0) {
        wg_memzero(tmp, sizeof(tmp));
        return -1;
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
