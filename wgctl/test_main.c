/*
 * wgctl unit tests: runs every group and prints TAP.
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "test.h"


static unsigned  test_count;
static unsigned  test_failed;


void
test_ok(int pass, const char *file, int line, const char *fmt, ...)
{
    va_list  args;

    test_count++;

    printf("%s %u - ", pass ? "ok" : "not ok", test_count);

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");

    if (!pass) {
        test_failed++;
        printf("#   failed at %s line %d\n", file, line);
    }

    fflush(stdout);
}


void
test_diag(const char *fmt, ...)
{
    va_list  args;

    printf("# ");

    va_start(args, fmt);
    vprintf(fmt, args);
    va_end(args);

    printf("\n");
}


/* a distinct, recognisable public key: the number in its first bytes */

void
test_key(uint8_t *key, unsigned n)
{
    memset(key, 0, WG_KEY_SIZE);
    key[0] = (uint8_t) (n >> 24);
    key[1] = (uint8_t) (n >> 16);
    key[2] = (uint8_t) (n >> 8);
    key[3] = (uint8_t) n;
    key[31] = 0x5a;
}


int
main(void)
{
    test_keys();
    test_config();
    test_diff();
    test_hosts();
    test_uapi();
    test_genl();
    test_peermap();
    test_path();
    test_relay();

    printf("1..%u\n", test_count);

    return test_failed ? 1 : 0;
}
