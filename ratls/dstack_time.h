/*
 * The one RFC 3339 date-time parser: collateral and CRL times
 * (ratls/), the attestation clock of the nginx modules and the CLI, and
 * the control plane's node expiry (ngx_dstack_vpc_check.c).  Plain C, no
 * nginx headers.
 */

#ifndef _DSTACK_TIME_H_INCLUDED_
#define _DSTACK_TIME_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <time.h>


#pragma GCC visibility push(hidden)


/*
 * "2025-07-01T00:00:00Z" to Unix time: "T", "t" or " " between date and
 * time, fractions of a second dropped, "Z", "z" or a "+hh:mm"/"-hh:mm"
 * offset; -1 for anything else
 */
int dstack_time_parse(const char *s, size_t len, time_t *t);


#pragma GCC visibility pop


#endif /* _DSTACK_TIME_H_INCLUDED_ */
