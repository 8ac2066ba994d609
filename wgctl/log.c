/*
 * wgctl: the agent's log and clock, under every part of "wgctl up": one
 * line per event on stderr, UTC time to the millisecond, and a monotonic
 * clock in milliseconds.
 */


#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "wgctl.h"


/* a daemon's log: one line per event, UTC time to the millisecond */

void
wg_log(const char *fmt, ...)
{
    char             ts[32];
    va_list          args;
    struct tm        tm;
    struct timespec  now;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);

    fprintf(stderr, "%s.%03ldZ %s: ", ts, now.tv_nsec / 1000000,
            wgctl_prog);

    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);

    fputc('\n', stderr);
    fflush(stderr);
}


long long
wg_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
