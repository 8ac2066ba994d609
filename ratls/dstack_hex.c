/*
 * Hex encoding and decoding (see dstack_hex.h).
 */

#include "dstack_hex.h"


static int
dstack_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


char *
dstack_hex_encode(char *dst, const unsigned char *src, size_t len)
{
    static const char  digits[] = "0123456789abcdef";

    while (len--) {
        *dst++ = digits[*src >> 4];
        *dst++ = digits[*src++ & 0x0f];
    }

    return dst;
}


ssize_t
dstack_hex_decode(unsigned char *dst, size_t max, const char *src,
    size_t len)
{
    int     hi, lo;
    size_t  i;

    if (len % 2 != 0 || len / 2 > max) {
        return -1;
    }

    for (i = 0; i < len / 2; i++) {
        hi = dstack_hex_value((unsigned char) src[2 * i]);
        lo = dstack_hex_value((unsigned char) src[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            return -1;
        }

        dst[i] = (unsigned char) (hi << 4 | lo);
    }

    return (ssize_t) (len / 2);
}
