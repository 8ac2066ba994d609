/*
 * Hex encoding and decoding (see dstack_hex.h).
 */

#include "dstack_hex.h"


/* a hex digit's value plus one, 0 for any other byte */
static const unsigned char  dstack_hex_values[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
    ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16
};


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
    size_t         i;
    unsigned char  hi, lo;

    if (len % 2 != 0 || len / 2 > max) {
        return -1;
    }

    for (i = 0; i < len / 2; i++) {
        hi = dstack_hex_values[(unsigned char) src[2 * i]];
        lo = dstack_hex_values[(unsigned char) src[2 * i + 1]];

        /* not a hex digit: 0 - 1 wraps to 0xff */
        hi--;
        lo--;

        if ((hi | lo) > 0x0f) {
            return -1;
        }

        dst[i] = (unsigned char) (hi << 4 | lo);
    }

    return (ssize_t) (len / 2);
}
