/*
 * Hex: the one encoder and the one decoder the nginx modules, wgctl and
 * the simulator share.  Plain C, no nginx headers.  Not for secret keys:
 * both branch on the data (wgctl encodes keys in constant time, keys.c).
 */

#ifndef _DSTACK_HEX_H_INCLUDED_
#define _DSTACK_HEX_H_INCLUDED_


#include <stddef.h>
#include <sys/types.h>


#pragma GCC visibility push(hidden)


/*
 * "len" bytes as 2 * len lowercase hex characters, no terminator; returns
 * the end of the output, as ngx_hex_dump() does
 */
char *dstack_hex_encode(char *dst, const unsigned char *src, size_t len);

/*
 * "len" hex characters of either case to bytes: returns the number of
 * bytes, or -1 for an odd length, a character that is not hex, or more
 * than "max" bytes
 */
ssize_t dstack_hex_decode(unsigned char *dst, size_t max, const char *src,
    size_t len);


#pragma GCC visibility pop


#endif /* _DSTACK_HEX_H_INCLUDED_ */
