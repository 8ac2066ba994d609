/*
 * Request header names folded as backends read them (dstack_header.h).
 */

#include "dstack_header.h"


unsigned char  dstack_header_fold_table[256];
unsigned char  dstack_header_first_table[256];


void
dstack_header_init(void)
{
    unsigned char  c;
    unsigned int   i;

    for (i = 0; i < 256; i++) {
        c = (unsigned char) i;

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;

        } else if (c == '_') {
            c = '-';
        }

        dstack_header_fold_table[i] = ((c >= 'a' && c <= 'z')
                                       || (c >= '0' && c <= '9')
                                       || c == '-') ? c : 0;

        c = dstack_header_fold_table[i];

        /* a letter or digit other than "x" starts no x-dstack-... name */
        dstack_header_first_table[i] = (c == 0 || c == '-' || c == 'x');
    }
}


int
dstack_header_fold(const unsigned char *name, size_t len,
    unsigned char *folded)
{
    size_t         i, n;
    unsigned int   odd;
    unsigned char  c;

    static const unsigned char  skeleton[] = "xdstack";

    odd = 0;
    n = 0;

    for (i = 0; i < len; i++) {
        c = dstack_header_fold_table[name[i]];

        if (i < DSTACK_HEADER_FOLD_LEN) {
            folded[i] = c;
        }

        if (c == '-') {
            continue;
        }

        if (c == 0) {
            odd = 1;
            continue;
        }

        if (n < sizeof(skeleton) - 1) {
            if (c != skeleton[n]) {
                /* nor x-dstack-..., spelt in any way */
                return DSTACK_HEADER_OTHER;
            }

            n++;
        }
    }

    if (n < sizeof(skeleton) - 1) {
        return DSTACK_HEADER_OTHER;
    }

    return odd ? DSTACK_HEADER_UNCLEAR : DSTACK_HEADER_DSTACK;
}
