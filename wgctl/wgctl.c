/*
 * wgctl: the dstack-vpc node's WireGuard helper.  Subcommands in the way
 * of wg(8): each has its own *_main(argc, argv) and usage.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wgctl.h"
#include "uapi.h"


typedef struct {
    const char              *name;
    int                    (*handler)(int argc, char **argv);
    const char              *description;
} wgctl_command_t;


static void wgctl_usage(FILE *out);
static int wgctl_options(int *argc, char **argv);


const char    *wgctl_prog = "wgctl";
int            wgctl_verbose;
wg_backend_e   wgctl_backend = WG_BACKEND_AUTO;


static const wgctl_command_t  wgctl_commands[] = {
    { "show", show_main,
      "Shows the state of one or all WireGuard devices" },
    { "setconf", setconf_main,
      "Sets the device to a configuration file, replacing all peers" },
    { "syncconf", setconf_main,
      "Applies only what differs between a config file and "
      "the device" },
    { "create", create_main,
      "Creates a device (kernel, else wireguard-go) or adopts one" },
    { "addr", addr_main,
      "Sets the device's address, MTU and routes, and brings it up" },
    { "down", down_main,
      "Removes a device (and stops its wireguard-go)" },
    { "hosts", hosts_main,
      "Rewrites the dstack-vpc block of a hosts file" },
    { "genkey", genkey_main,
      "Generates a new private key and writes it to stdout" },
    { "pubkey", pubkey_main,
      "Reads a private key from stdin, writes its public key" },
    { "verify", dstack_verify_main,
      "Verifies a dstack attestation (RA-TLS certificate) offline" },

    { "up", up_main,
      "Runs the node agent: joins the VPC and keeps the device in step" },
    { "status", status_main,
      "Shows the agent's view: this node and its peers" },
    { "metrics", metrics_main,
      "Prints the agent's and the device's numbers for Prometheus" },
    { "relay", relay_main,
      "Runs the WireGuard relay engine alone (tests, benches)" },

    /* the server side, on the VPC's Redis */
    { "nodes", nodes_main,
      "Lists, deletes or expires the VPC's nodes" },
    { "preauthkeys", preauthkeys_main,
      "Creates, lists or expires pre-auth keys" },

    { NULL, NULL, NULL }
};


static void
wgctl_usage(FILE *out)
{
    const wgctl_command_t  *cmd;

    fprintf(out, "Usage: %s [-v] [--backend uapi|netlink] <cmd> "
            "[<args>]\n\n", wgctl_prog);
    fprintf(out, "Available subcommands:\n");

    for (cmd = wgctl_commands; cmd->name != NULL; cmd++) {
        fprintf(out, "  %-11s %s\n", cmd->name, cmd->description);
    }

    fprintf(out, "\nOptions, anywhere on the line:\n"
            "  -v, --verbose          report what was sent\n"
            "  --backend uapi|netlink force a backend (default: the UAPI "
            "socket\n"
            "                         %s/<if>.sock if present, else "
            "netlink)\n"
            "\nYou may pass `--help' to any of these subcommands to view "
            "usage.\n", WG_UAPI_DIR);
}


int
wgctl_is_help(int argc, char **argv)
{
    int  i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            return 1;
        }
    }

    return 0;
}


/* takes the common options out of argv, wherever they are */

static int
wgctl_options(int *argc, char **argv)
{
    int          i, j;
    const char  *value;

    for (i = 1, j = 1; i < *argc; i++) {
        if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0)
        {
            wgctl_verbose = 1;
            continue;
        }

        value = NULL;

        if (strcmp(argv[i], "--backend") == 0) {
            if (i + 1 == *argc) {
                fprintf(stderr, "%s: option \"--backend\" needs a value\n",
                        wgctl_prog);
                return -1;
            }

            value = argv[++i];

        } else if (strncmp(argv[i], "--backend=", 10) == 0) {
            value = argv[i] + 10;
        }

        if (value != NULL) {
            if (wg_backend_parse(value, &wgctl_backend) != 0) {
                fprintf(stderr, "%s: invalid backend \"%s\" (expected "
                        "\"uapi\" or \"netlink\")\n", wgctl_prog, value);
                return -1;
            }

            continue;
        }

        argv[j++] = argv[i];
    }

    *argc = j;
    argv[j] = NULL;

    return 0;
}


int
main(int argc, char **argv)
{
    const wgctl_command_t  *cmd;

    if (wgctl_options(&argc, argv) != 0) {
        return 1;
    }

    if (argc < 2) {
        wgctl_usage(stderr);
        return 1;
    }

    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0
        || strcmp(argv[1], "help") == 0)
    {
        wgctl_usage(stdout);
        return 0;
    }

    if (strcmp(argv[1], "--version") == 0) {
        printf("wgctl (dstack-vpc)\n");
        return 0;
    }

    for (cmd = wgctl_commands; cmd->name != NULL; cmd++) {
        if (strcmp(argv[1], cmd->name) == 0) {
            return cmd->handler(argc - 1, argv + 1) == 0 ? 0 : 1;
        }
    }

    fprintf(stderr, "%s: invalid subcommand \"%s\"\n", wgctl_prog, argv[1]);
    wgctl_usage(stderr);

    return 1;
}
