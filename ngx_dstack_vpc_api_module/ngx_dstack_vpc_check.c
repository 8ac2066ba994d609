
/*
 * Input checks that both modules of ngx_dstack_vpc_api_module use: the
 * REST API and the VPN control plane (README.md in this folder).
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_dstack_vpc_check.h"
#include "dstack_time.h"


/*
 * A dotted quad, each part 0-255 without leading zeros; the address in
 * host order into *addr unless addr is NULL.
 */

ngx_int_t
ngx_dstack_vpc_parse_ipv4(u_char *p, size_t len, uint32_t *addr)
{
    u_char      *last;
    uint32_t     a;
    ngx_uint_t   parts, digits, value;

    last = p + len;
    parts = 0;
    a = 0;

    while (p < last) {
        digits = 0;
        value = 0;

        while (p < last && *p >= '0' && *p <= '9') {
            if (digits == 1 && value == 0) {
                return NGX_ERROR;
            }

            value = value * 10 + (*p++ - '0');

            if (++digits > 3 || value > 255) {
                return NGX_ERROR;
            }
        }

        if (digits == 0 || ++parts > 4) {
            return NGX_ERROR;
        }

        a = (a << 8) | value;

        if (p == last) {
            break;
        }

        if (*p++ != '.' || p == last) {
            return NGX_ERROR;
        }
    }

    if (parts != 4) {
        return NGX_ERROR;
    }

    if (addr != NULL) {
        *addr = a;
    }

    return NGX_OK;
}


/*
 * An RFC 3339 time in UTC, "2027-01-01T00:00:00Z" (fractions of a second
 * dropped), not before 1970: Unix seconds, or NGX_ERROR.  The parser is
 * the project's one (ratls/dstack_time.c); offsets are refused here.
 */

time_t
ngx_dstack_vpc_parse_time(u_char *p, size_t len)
{
    time_t  t;

    if (len < sizeof("2027-01-01T00:00:00Z") - 1
        || (p[10] != 'T' && p[10] != 't')
        || (p[len - 1] != 'Z' && p[len - 1] != 'z')
        || dstack_time_parse((char *) p, len, &t) != 0
        || t < 0)
    {
        return NGX_ERROR;
    }

    return t;
}
