/*
 * dstack-sim: what every file of the simulator uses: the log.
 */

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "sim.h"


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
