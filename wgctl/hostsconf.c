/*
 * wgctl hosts <file> [<name>=<ip>]...: sets the dstack-vpc block of a
 * hosts file; no entries removes the block.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wgctl.h"
#include "hosts.h"


#define WGCTL_HOSTS_MAX_ARGS  65536


int
hosts_main(int argc, char **argv)
{
    int         i, rc;
    char        err[256], *eq;
    wg_host_t  *hosts;

    if (wgctl_is_help(argc, argv)) {
        printf("Usage: %s hosts <file> [<name>=<ip>]...\n", wgctl_prog);
        return 0;
    }

    if (argc < 2 || argc - 2 > WGCTL_HOSTS_MAX_ARGS) {
        fprintf(stderr, "Usage: %s hosts <file> [<name>=<ip>]...\n",
                wgctl_prog);
        return 1;
    }

    hosts = calloc((size_t) argc, sizeof(wg_host_t));
    if (hosts == NULL) {
        perror(wgctl_prog);
        return 1;
    }

    for (i = 2; i < argc; i++) {
        eq = strchr(argv[i], '=');

        if (eq == NULL) {
            fprintf(stderr, "%s: hosts: expected <name>=<ip>, got \"%s\"\n",
                    wgctl_prog, argv[i]);
            free(hosts);
            return 1;
        }

        *eq = '\0';
        hosts[i - 2].name = argv[i];
        hosts[i - 2].ip = eq + 1;
    }

    err[0] = '\0';
    rc = wg_hosts_update(argv[1], hosts, (size_t) argc - 2, err, sizeof(err));
    free(hosts);

    if (rc < 0) {
        fprintf(stderr, "%s: %s: %s\n", wgctl_prog, argv[1], err);
        return 1;
    }

    if (wgctl_verbose) {
        fprintf(stderr, "%s: %s %s\n", wgctl_prog, argv[1],
                rc ? "rewritten" : "unchanged");
    }

    return 0;
}
