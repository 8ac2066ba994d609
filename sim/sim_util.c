/*
 * dstack-sim: what every file of the simulator uses: hex and the log.
 */

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "sim.h"


/* returns the number of bytes, or -1 for bad hex or more than "max" */

int
sim_hex_decode(const char *hex, size_t hex_len, u_char *out, size_t max)
{
    int     d[2];
    char    c;
    size_t  i, k;

    if (hex_len % 2 != 0 || hex_len / 2 > max) {
        return -1;
    }

    for (i = 0; i < hex_len / 2; i++) {
        for (k = 0; k < 2; k++) {
            c = hex[2 * i + k];

            if (c >= '0' && c <= '9') {
                d[k] = c - '0';

            } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
                d[k] = (c | 0x20) - 'a' + 10;

            } else {
                return -1;
            }
        }

        out[i] = (u_char) (d[0] << 4 | d[1]);
    }

    return (int) (hex_len / 2);
}


void
sim_hex_encode(const u_char *p, size_t len, char *out)
{
    size_t             i;
    static const char  digits[] = "0123456789abcdef";

    for (i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 0x0f];
    }

    out[2 * len] = '\0';
}


/* stderr only, never key material: callers pass names, paths, statuses */

void
sim_log(const char *fmt, ...)
{
    char     buf[1024];
    va_list  args;

    va_start(args, fmt);
    vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);

    fprintf(stderr, "dstack-sim[%ld]: %s\n", (long) getpid(), buf);
}
