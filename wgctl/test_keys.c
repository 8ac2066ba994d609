/*
 * wgctl unit tests: key encodings and X25519 (RFC 7748 section 6.1).
 */


#include <string.h>

#include "test.h"


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
}
