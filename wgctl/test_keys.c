/*
 * wgctl unit tests: key encodings and X25519 (RFC 7748 section 6.1).  The
 * encodings are compared with OpenSSL's base64 and printf's hex for every
 * byte value at every position, and every byte value is tried at every
 * position of an encoded key.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "test.h"


static void test_key_pattern(uint8_t *key, size_t pos, unsigned byte);
static void test_keys_encode(void);
static void test_keys_base64_bytes(void);
static void test_keys_hex_bytes(void);


static const char  test_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


void
test_keys(void)
{
    char     b64[WG_KEY_B64_LEN + 1], hex[WG_KEY_HEX_LEN + 1];
    uint8_t  priv[WG_KEY_SIZE], pub[WG_KEY_SIZE], k2[WG_KEY_SIZE];
    int      i, canonical;

    ok(wg_key_from_hex(priv, "77076d0a7318a57d3c16c17251b26645"
                             "df4c2f87ebc0992ab177fba51db92c2a") == 0,
       "hex private key decodes");
    ok(wg_key_public(pub, priv) == 0, "public key computed");

    wg_key_to_hex(hex, pub);
    ok(strcmp(hex, "8520f0098930a754748b7ddcb43ef75a"
                   "0dbf3a0d26381af4eba4a98eaa9b4e6a") == 0,
       "X25519 public key matches RFC 7748");

    wg_key_to_base64(b64, pub);
    ok(strcmp(b64, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=") == 0,
       "base64 of the public key");

    ok(wg_key_from_base64(k2, b64) == 0 && memcmp(k2, pub, 32) == 0,
       "base64 round trip");

    /* every key round-trips; the spelling is unique */
    canonical = 1;

    for (i = 0; i < 256; i++) {
        memset(k2, i, sizeof(k2));
        k2[31] = (uint8_t) (255 - i);
        wg_key_to_base64(b64, k2);

        if (wg_key_from_base64(priv, b64) != 0
            || memcmp(priv, k2, sizeof(k2)) != 0)
        {
            canonical = 0;
        }
    }

    ok(canonical, "256 keys round-trip through base64");

    ok(wg_key_from_base64(k2, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=")
       != 0, "non-canonical base64 (stray low bits) rejected");
    ok(wg_key_from_base64(k2, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo")
       != 0, "base64 without padding rejected");
    ok(wg_key_from_base64(k2, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqqb!mo=")
       != 0, "base64 with a bad character rejected");
    ok(wg_key_from_base64(k2, "") != 0, "empty base64 rejected");
    ok(wg_key_from_hex(k2, "8520f0") != 0, "short hex rejected");
    ok(wg_key_from_hex(k2, "x520f0098930a754748b7ddcb43ef75a"
                           "0dbf3a0d26381af4eba4a98eaa9b4e6a") != 0,
       "bad hex rejected");

    ok(wg_key_generate(priv) == 0 && (priv[0] & 7) == 0
       && (priv[31] & 0xc0) == 0x40, "generated key is clamped");
    ok(wg_key_generate(k2) == 0 && memcmp(priv, k2, 32) != 0,
       "two generated keys differ");

    memset(k2, 0, sizeof(k2));
    ok(wg_key_is_zero(k2) && !wg_key_is_zero(priv), "zero key detected");

    ok(wg_key_from_base64(k2, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm=")
       != 0, "43 characters of base64 rejected");
    ok(wg_key_from_base64(k2, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmoA=")
       != 0, "45 characters of base64 rejected");
    ok(wg_key_from_hex(k2, "8520f0098930a754748b7ddcb43ef75a"
                           "0dbf3a0d26381af4eba4a98eaa9b4e6") != 0,
       "63 hex digits rejected");
    ok(wg_key_from_hex(k2, "8520f0098930a754748b7ddcb43ef75a"
                           "0dbf3a0d26381af4eba4a98eaa9b4e6a0") != 0,
       "65 hex digits rejected");

    test_keys_encode();
    test_keys_base64_bytes();
    test_keys_hex_bytes();
}


/* a key of varied bytes, with "byte" at "pos" */

static void
test_key_pattern(uint8_t *key, size_t pos, unsigned byte)
{
    size_t  i;

    for (i = 0; i < WG_KEY_SIZE; i++) {
        key[i] = (uint8_t) (i * 37 + 11);
    }

    key[pos] = (uint8_t) byte;
}


/* all 256 byte values at each of the 32 positions: 8,192 keys */

static void
test_keys_encode(void)
{
    char      b64[WG_KEY_B64_LEN + 1], hex[WG_KEY_HEX_LEN + 1];
    char      ref[WG_KEY_HEX_LEN + 1], upper[WG_KEY_HEX_LEN + 1];
    size_t    pos, i, bad_b64, bad_b64_back, bad_hex, bad_hex_back;
    uint8_t   key[WG_KEY_SIZE], back[WG_KEY_SIZE];
    unsigned  byte;

    bad_b64 = 0;
    bad_b64_back = 0;
    bad_hex = 0;
    bad_hex_back = 0;

    for (pos = 0; pos < WG_KEY_SIZE; pos++) {
        for (byte = 0; byte < 256; byte++) {
            test_key_pattern(key, pos, byte);

            wg_key_to_base64(b64, key);

            if (EVP_EncodeBlock((unsigned char *) ref, key, WG_KEY_SIZE)
                    != WG_KEY_B64_LEN
                || strcmp(b64, ref) != 0)
            {
                if (bad_b64++ == 0) {
                    test_diag("byte %u at %zu: \"%s\", OpenSSL \"%s\"",
                              byte, pos, b64, ref);
                }
            }

            if (wg_key_from_base64(back, ref) != 0
                || memcmp(back, key, WG_KEY_SIZE) != 0)
            {
                bad_b64_back++;
            }

            wg_key_to_hex(hex, key);

            for (i = 0; i < WG_KEY_SIZE; i++) {
                snprintf(ref + 2 * i, 3, "%02x", key[i]);
                snprintf(upper + 2 * i, 3, "%02X", key[i]);
            }

            if (strcmp(hex, ref) != 0) {
                if (bad_hex++ == 0) {
                    test_diag("byte %u at %zu: \"%s\", printf \"%s\"",
                              byte, pos, hex, ref);
                }
            }

            if (wg_key_from_hex(back, ref) != 0
                || memcmp(back, key, WG_KEY_SIZE) != 0
                || wg_key_from_hex(back, upper) != 0
                || memcmp(back, key, WG_KEY_SIZE) != 0)
            {
                bad_hex_back++;
            }
        }
    }

    ok(bad_b64 == 0, "8192 keys (every byte at every position): base64 "
       "as OpenSSL's EVP_EncodeBlock (%zu differ)", bad_b64);
    ok(bad_b64_back == 0, "8192 keys: OpenSSL's base64 decodes to the key "
       "(%zu differ)", bad_b64_back);
    ok(bad_hex == 0, "8192 keys: hex as printf's %%02x (%zu differ)",
       bad_hex);
    ok(bad_hex_back == 0, "8192 keys: lower and upper case hex decode to "
       "the key (%zu differ)", bad_hex_back);
}


/*
 * Every byte value 1..255 at each of the 44 places of a base64 key: read
 * exactly when it is in the alphabet (the last place: '='; the one before:
 * a character whose low two bits are zero, the one spelling), and then to
 * what OpenSSL's EVP_DecodeBlock reads.
 */

static void
test_keys_base64_bytes(void)
{
    int            rc, n;
    char           text[WG_KEY_B64_LEN + 1];
    size_t         pos, bad, accepted;
    uint8_t        key[WG_KEY_SIZE], got[WG_KEY_SIZE];
    unsigned       c;
    const char    *p;
    unsigned char  ref[WG_KEY_B64_LEN];
    int            valid;

    bad = 0;
    accepted = 0;

    for (pos = 0; pos < WG_KEY_B64_LEN; pos++) {
        for (c = 1; c < 256; c++) {
            test_key_pattern(key, pos % WG_KEY_SIZE, pos * 7);
            wg_key_to_base64(text, key);
            text[pos] = (char) c;

            p = (c == '=') ? NULL : strchr(test_b64_alphabet, (int) c);

            if (pos == WG_KEY_B64_LEN - 1) {
                valid = (c == '=');

            } else if (pos == WG_KEY_B64_LEN - 2) {
                valid = (p != NULL && ((p - test_b64_alphabet) & 3) == 0);

            } else {
                valid = (p != NULL);
            }

            rc = wg_key_from_base64(got, text);

            if ((rc == 0) != valid) {
                if (bad++ == 0) {
                    test_diag("byte %u at %zu: %s", c, pos,
                              rc == 0 ? "accepted" : "rejected");
                }

                continue;
            }

            if (rc != 0) {
                continue;
            }

            accepted++;

            n = EVP_DecodeBlock(ref, (unsigned char *) text,
                                WG_KEY_B64_LEN);

            if (n != WG_KEY_SIZE + 1 || memcmp(got, ref, WG_KEY_SIZE) != 0) {
                if (bad++ == 0) {
                    test_diag("byte %u at %zu: not as OpenSSL reads it",
                              c, pos);
                }
            }
        }
    }

    ok(bad == 0 && accepted == 42 * 64 + 16 + 1,
       "base64: 255 bytes at each of 44 places, %zu read as OpenSSL reads "
       "them, the rest rejected (%zu wrong)", accepted, bad);
}


/* every byte value 1..255 at each of the 64 places of a hex key */

static void
test_keys_hex_bytes(void)
{
    int       rc, valid;
    char      text[WG_KEY_HEX_LEN + 1], pair[3];
    size_t    pos, bad, accepted;
    uint8_t   key[WG_KEY_SIZE], got[WG_KEY_SIZE];
    unsigned  c;

    bad = 0;
    accepted = 0;

    for (pos = 0; pos < WG_KEY_HEX_LEN; pos++) {
        for (c = 1; c < 256; c++) {
            test_key_pattern(key, pos / 2, pos * 5);
            wg_key_to_hex(text, key);
            text[pos] = (char) c;

            valid = strchr("0123456789abcdefABCDEF", (int) c) != NULL;

            rc = wg_key_from_hex(got, text);

            if ((rc == 0) != valid) {
                if (bad++ == 0) {
                    test_diag("byte %u at %zu: %s", c, pos,
                              rc == 0 ? "accepted" : "rejected");
                }

                continue;
            }

            if (rc != 0) {
                continue;
            }

            accepted++;

            pair[0] = text[pos & ~(size_t) 1];
            pair[1] = text[pos | 1];
            pair[2] = '\0';
            key[pos / 2] = (uint8_t) strtoul(pair, NULL, 16);

            if (memcmp(got, key, WG_KEY_SIZE) != 0) {
                if (bad++ == 0) {
                    test_diag("byte %u at %zu: not read as \"%s\"", c, pos,
                              pair);
                }
            }
        }
    }

    ok(bad == 0 && accepted == 64 * 22,
       "hex: 255 bytes at each of 64 places, %zu read as strtoul reads "
       "them, the rest rejected (%zu wrong)", accepted, bad);
}
