/*
 * wgctl genkey|pubkey: X25519 keys in wg(8)'s base64 form.
 */


#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "wgctl.h"


int
genkey_main(int argc, char **argv)
{
    char     b64[WG_KEY_B64_LEN + 1];
    uint8_t  key[WG_KEY_SIZE];

    if (wgctl_is_help(argc, argv)) {
        printf("Usage: %s genkey\n", wgctl_prog);
        return 0;
    }

    if (argc != 1) {
        fprintf(stderr, "Usage: %s genkey\n", wgctl_prog);
        return 1;
    }

    if (wg_key_generate(key) != 0) {
        fprintf(stderr, "%s: unable to generate a key\n", wgctl_prog);
        return 1;
    }

    wg_key_to_base64(b64, key);
    printf("%s\n", b64);

    wg_memzero(key, sizeof(key));
    wg_memzero(b64, sizeof(b64));

    return fflush(stdout) == 0 ? 0 : 1;
}


int
pubkey_main(int argc, char **argv)
{
    int      rc;
    char     line[WG_KEY_B64_LEN + 8], b64[WG_KEY_B64_LEN + 1];
    size_t   len;
    ssize_t  n;
    uint8_t  priv[WG_KEY_SIZE], pub[WG_KEY_SIZE];

    if (wgctl_is_help(argc, argv)) {
        printf("Usage: %s pubkey < private.key\n", wgctl_prog);
        return 0;
    }

    if (argc != 1) {
        fprintf(stderr, "Usage: %s pubkey < private.key\n", wgctl_prog);
        return 1;
    }

    len = 0;

    while (len < sizeof(line) - 1) {
        n = read(STDIN_FILENO, line + len, sizeof(line) - 1 - len);

        if (n <= 0) {
            break;
        }

        len += (size_t) n;
    }

    line[len] = '\0';

    while (len > 0
           && (line[len - 1] == '\n' || line[len - 1] == '\r'
               || line[len - 1] == ' ' || line[len - 1] == '\t'))
    {
        line[--len] = '\0';
    }

    rc = 1;

    if (wg_key_from_base64(priv, line) != 0) {
        fprintf(stderr, "%s: key is not the correct length or format\n",
                wgctl_prog);
        goto done;
    }

    if (wg_key_public(pub, priv) != 0) {
        fprintf(stderr, "%s: unable to compute the public key\n",
                wgctl_prog);
        goto done;
    }

    wg_key_to_base64(b64, pub);
    printf("%s\n", b64);
    rc = fflush(stdout) == 0 ? 0 : 1;

done:

    wg_memzero(line, sizeof(line));
    wg_memzero(priv, sizeof(priv));

    return rc;
}
