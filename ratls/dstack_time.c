/*
 * RFC 3339 date-times (see dstack_time.h).
 */

#include "dstack_time.h"


/* days since 1970-01-01 of a proleptic Gregorian date */
static int64_t
dstack_time_days(int64_t y, unsigned m, unsigned d)
{
    int64_t   era;
    unsigned  yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t) doe - 719468;
}


static int
dstack_time_digits(const char *s, size_t n, unsigned *v)
{
    size_t  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        *v = *v * 10 + (unsigned) (s[i] - '0');
    }

    return 0;
}


int
dstack_time_parse(const char *s, size_t len, time_t *t)
{
    size_t    i;
    int64_t   secs, off;
    unsigned  y, mo, d, h, mi, sec, oh, om;

    if (len < 20
        || dstack_time_digits(s, 4, &y) != 0 || s[4] != '-'
        || dstack_time_digits(s + 5, 2, &mo) != 0 || s[7] != '-'
        || dstack_time_digits(s + 8, 2, &d) != 0
        || (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        || dstack_time_digits(s + 11, 2, &h) != 0 || s[13] != ':'
        || dstack_time_digits(s + 14, 2, &mi) != 0 || s[16] != ':'
        || dstack_time_digits(s + 17, 2, &sec) != 0)
    {
        return -1;
    }

    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59
        || sec > 60)
    {
        return -1;
    }

    i = 19;

    if (s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            /* fractions of a second are dropped */
        }
    }

    if (i == len) {
        return -1;
    }

    if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len) {
        off = 0;

    } else if ((s[i] == '+' || s[i] == '-') && i + 6 == len
               && dstack_time_digits(s + i + 1, 2, &oh) == 0 && s[i + 3] == ':'
               && dstack_time_digits(s + i + 4, 2, &om) == 0
               && oh < 24 && om < 60)
    {
        off = (int64_t) (oh * 3600 + om * 60);

        if (s[i] == '-') {
            off = -off;
        }

    } else {
        return -1;
    }

    secs = dstack_time_days(y, mo, d) * 86400
           + h * 3600 + mi * 60 + sec - off;

    *t = (time_t) secs;

    return 0;
}
