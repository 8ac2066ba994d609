/*
 * wgctl setconf|syncconf <if> <file>.  setconf replaces the device's
 * configuration as wg(8) does (all peers replaced); syncconf reads the
 * device, computes the difference and sends only that, or nothing.
 */


#include <stdio.h>
#include <string.h>

#include "wgctl.h"


static void setconf_usage(FILE *out, const char *cmd);
static void setconf_report(const char *cmd, const wg_device_t *dev,
    const wg_diff_stats_t *st, const wg_io_stats_t *io, wg_backend_e backend);


static void
setconf_usage(FILE *out, const char *cmd)
{
    fprintf(out, "Usage: %s %s <interface> <configuration filename>\n",
            wgctl_prog, cmd);
}


static void
setconf_report(const char *cmd, const wg_device_t *dev,
    const wg_diff_stats_t *st, const wg_io_stats_t *io, wg_backend_e backend)
{
    fprintf(stderr, "%s: %s %s: %zu added, %zu removed, %zu changed, "
            "%zu unchanged peers%s%s%s; sent %zu request%s (%zu bytes) "
            "over %s\n",
            wgctl_prog, cmd, dev->name, st->added, st->removed, st->changed,
            st->unchanged,
            st->private_key ? "; private key set" : "",
            st->listen_port ? "; listen port set" : "",
            st->fwmark ? "; fwmark set" : "",
            io->requests, io->requests == 1 ? "" : "s", io->bytes,
            wg_backend_name(backend));
}


int
setconf_main(int argc, char **argv)
{
    int               rc, sync;
    char              err[256];
    size_t            i;
    wg_device_t      *desired, *actual, *changes;
    wg_backend_e      backend;
    wg_io_stats_t     io;
    wg_diff_stats_t   st;

    sync = (strcmp(argv[0], "syncconf") == 0);

    if (wgctl_is_help(argc, argv)) {
        setconf_usage(stdout, argv[0]);
        return 0;
    }

    if (argc != 3) {
        setconf_usage(stderr, argv[0]);
        return 1;
    }

    if (!wg_ifname_valid(argv[1])) {
        fprintf(stderr, "%s: invalid interface name \"%s\"\n", wgctl_prog,
                argv[1]);
        return 1;
    }

    actual = NULL;
    changes = NULL;
    rc = 1;
    memset(&io, 0, sizeof(wg_io_stats_t));
    memset(&st, 0, sizeof(wg_diff_stats_t));

    desired = wg_device_new(argv[1]);
    if (desired == NULL) {
        perror(wgctl_prog);
        return 1;
    }

    err[0] = '\0';

    if (wg_config_read(desired, argv[2], err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s: %s\n", wgctl_prog, argv[2], err);
        goto done;
    }

    backend = wgctl_backend;
    if (backend == WG_BACKEND_AUTO) {
        backend = wg_backend_pick(argv[1]);
    }

    if (sync) {
        rc = wg_device_get(argv[1], backend, &actual);
        if (rc != 0) {
            fprintf(stderr, "%s: unable to access interface \"%s\": %s\n",
                    wgctl_prog, argv[1], wg_strerror(rc));
            rc = 1;
            goto done;
        }

        rc = wg_diff(actual, desired, &changes, &st);
        if (rc != 0) {
            fprintf(stderr, "%s: cannot compare \"%s\" with \"%s\": %s\n",
                    wgctl_prog, argv[1], argv[2], wg_strerror(rc));
            rc = 1;
            goto done;
        }

    } else {
        changes = desired;
        desired = NULL;
        changes->flags |= WG_DEV_REPLACE_PEERS;

        for (i = 0; i < changes->npeers; i++) {
            changes->peers[i].flags |= WG_PEER_REPLACE_ALLOWEDIPS;
        }

        st.added = changes->npeers;
    }

    rc = 0;

    if (!wg_device_is_noop(changes)) {
        rc = wg_device_set(changes, backend, &io);
    }

    if (rc != 0) {
        fprintf(stderr, "%s: unable to modify interface \"%s\": %s\n",
                wgctl_prog, argv[1], wg_strerror(rc));
        rc = 1;
    }

    /* what was sent: a failed change set was not applied as counted */
    if (rc == 0 && wgctl_verbose) {
        setconf_report(argv[0], changes, &st, &io, backend);
    }

done:

    wg_device_free(desired);
    wg_device_free(actual);
    wg_device_free(changes);

    return rc;
}
