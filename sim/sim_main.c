/*
 * dstack-sim: the command line.
 *
 *   dstack-sim serve   serve the guest-agent API on a Unix socket
 *   dstack-sim mkcert  write a key and a chain, optionally malformed
 *   dstack-sim root    print the path of the KMS root certificate
 */

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "sim.h"


#define SIM_RAW_MAX   4096


typedef struct {
    const char             *name;
    int                   (*main)(int argc, char **argv);
} sim_command_t;


enum {
    SIM_OPT_SOCKET = 256,
    SIM_OPT_STATE_DIR,
    SIM_OPT_APP_ID,
    SIM_OPT_INSTANCE_ID,
    SIM_OPT_PROFILE,
    SIM_OPT_APP_NAME,
    SIM_OPT_COMPOSE_HASH,
    SIM_OPT_PIDFILE,
    SIM_OPT_KEY_OUT,
    SIM_OPT_CHAIN_OUT,
    SIM_OPT_USAGE,
    SIM_OPT_SUBJECT,
    SIM_OPT_ALT_NAME,
    SIM_OPT_EXPIRED,
    SIM_OPT_NOT_YET_VALID,
    SIM_OPT_APP_ID_LEN,
    SIM_OPT_APP_ID_WRAP,
    SIM_OPT_APP_ID_DUP,
    SIM_OPT_APP_ID_TRAILING,
    SIM_OPT_APP_ID_UTF8,
    SIM_OPT_NO_APP_ID,
    SIM_OPT_APP_ID_RAW,
    SIM_OPT_QUOTE_TEMPLATE,
    SIM_OPT_ATTESTATION,
    SIM_OPT_HELP
};


static int sim_serve_main(int argc, char **argv);
static int sim_mkcert_main(int argc, char **argv);
static int sim_root_main(int argc, char **argv);
static int sim_ctx_option(sim_ctx_t *ctx, int opt, const char *arg);
static int sim_ctx_check(sim_ctx_t *ctx, int need_instance);
static int sim_parse_hex(const char *opt, const char *hex, u_char *out,
    size_t len);
static void sim_usage(FILE *f);
static void sim_signal_handler(int signo);


static volatile sig_atomic_t  sim_stop;
static int                    sim_have_app_id;
static int                    sim_have_instance_id;
static int                    sim_have_compose_hash;

static const sim_command_t  sim_commands[] = {
    { "serve", sim_serve_main },
    { "mkcert", sim_mkcert_main },
    { "root", sim_root_main },
    { NULL, NULL }
};

/* the options that describe the simulated CVM, shared by the commands */
#define SIM_CTX_OPTIONS                                                      \
    { "state-dir", required_argument, NULL, SIM_OPT_STATE_DIR },             \
    { "app-id", required_argument, NULL, SIM_OPT_APP_ID },                   \
    { "instance-id", required_argument, NULL, SIM_OPT_INSTANCE_ID },         \
    { "profile", required_argument, NULL, SIM_OPT_PROFILE },                 \
    { "quote-template", required_argument, NULL,                             \
      SIM_OPT_QUOTE_TEMPLATE },                                              \
    { "help", no_argument, NULL, SIM_OPT_HELP }


int
main(int argc, char **argv)
{
    const sim_command_t  *cmd;

    if (argc < 2) {
        sim_usage(stderr);
        return 1;
    }

    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0
        || strcmp(argv[1], "help") == 0)
    {
        sim_usage(stdout);
        return 0;
    }

    for (cmd = sim_commands; cmd->name != NULL; cmd++) {
        if (strcmp(argv[1], cmd->name) == 0) {
            return cmd->main(argc - 1, argv + 1);
        }
    }

    fprintf(stderr, "dstack-sim: unknown command \"%s\"\n", argv[1]);
    sim_usage(stderr);

    return 1;
}


static int
sim_serve_main(int argc, char **argv)
{
    int                    fd, opt, rc;
    char                   pid[32];
    sim_ctx_t              ctx;
    const char            *socket_path, *pidfile;
    struct sigaction       sa;
    static struct option   options[] = {
        SIM_CTX_OPTIONS,
        { "socket", required_argument, NULL, SIM_OPT_SOCKET },
        { "app-name", required_argument, NULL, SIM_OPT_APP_NAME },
        { "compose-hash", required_argument, NULL, SIM_OPT_COMPOSE_HASH },
        { "pidfile", required_argument, NULL, SIM_OPT_PIDFILE },
        { NULL, 0, NULL, 0 }
    };

    memset(&ctx, 0, sizeof(sim_ctx_t));
    ctx.kms = 1;
    socket_path = NULL;
    pidfile = NULL;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {

        case SIM_OPT_SOCKET:
            socket_path = optarg;
            break;

        case SIM_OPT_PIDFILE:
            pidfile = optarg;
            break;

        case SIM_OPT_HELP:
            sim_usage(stdout);
            return 0;

        default:
            if (sim_ctx_option(&ctx, opt, optarg) != 0) {
                return 1;
            }
        }
    }

    if (socket_path == NULL || optind != argc) {
        fprintf(stderr, "dstack-sim: serve needs --socket and no "
                        "positional arguments\n");
        return 1;
    }

    if (sim_ctx_check(&ctx, 1) != 0 || sim_ctx_init(&ctx) != 0) {
        return 1;
    }

    fd = sim_http_listen(socket_path);
    if (fd == -1) {
        sim_ctx_free(&ctx);
        return 1;
    }

    if (pidfile != NULL) {
        snprintf(pid, sizeof(pid), "%ld\n", (long) getpid());

        if (sim_write_file(pidfile, pid, strlen(pid), 0644) != 0) {
            close(fd);
            unlink(socket_path);
            sim_ctx_free(&ctx);
            return 1;
        }
    }

    /* no SA_RESTART: a signal must interrupt poll() */
    memset(&sa, 0, sizeof(struct sigaction));
    sa.sa_handler = sim_signal_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    sim_log("listening on \"%s\", profile %s, state dir \"%s\"",
            socket_path, ctx.kms ? "kms" : "no-kms", ctx.state_dir);

    rc = sim_http_run(fd, sim_api_handler, &ctx, &sim_stop);

    close(fd);
    unlink(socket_path);

    if (pidfile != NULL) {
        unlink(pidfile);
    }

    sim_ctx_free(&ctx);

    sim_log("exiting");

    return rc == 0 ? 0 : 1;
}


static int
sim_mkcert_main(int argc, char **argv)
{
    int                    opt, rc, nvariants;
    char                  *chain, *p, *end;
    u_char                 raw[SIM_RAW_MAX];
    size_t                 i, len;
    time_t                 now;
    sim_ctx_t              ctx;
    sim_pem_t              pem;
    sim_leaf_t             lf;
    const char            *key_out, *chain_out, *usage;
    const char            *names[SIM_ALT_NAMES_MAX];
    static struct option   options[] = {
        SIM_CTX_OPTIONS,
        { "key-out", required_argument, NULL, SIM_OPT_KEY_OUT },
        { "chain-out", required_argument, NULL, SIM_OPT_CHAIN_OUT },
        { "usage", required_argument, NULL, SIM_OPT_USAGE },
        { "subject", required_argument, NULL, SIM_OPT_SUBJECT },
        { "alt-name", required_argument, NULL, SIM_OPT_ALT_NAME },
        { "expired", no_argument, NULL, SIM_OPT_EXPIRED },
        { "not-yet-valid", no_argument, NULL, SIM_OPT_NOT_YET_VALID },
        { "app-id-len", required_argument, NULL, SIM_OPT_APP_ID_LEN },
        { "app-id-wrap", required_argument, NULL, SIM_OPT_APP_ID_WRAP },
        { "app-id-dup", no_argument, NULL, SIM_OPT_APP_ID_DUP },
        { "app-id-trailing", no_argument, NULL, SIM_OPT_APP_ID_TRAILING },
        { "app-id-type-utf8", no_argument, NULL, SIM_OPT_APP_ID_UTF8 },
        { "no-app-id", no_argument, NULL, SIM_OPT_NO_APP_ID },
        { "app-id-raw", required_argument, NULL, SIM_OPT_APP_ID_RAW },
        { NULL, 0, NULL, 0 }
    };

    memset(&ctx, 0, sizeof(sim_ctx_t));
    memset(&lf, 0, sizeof(sim_leaf_t));
    ctx.kms = 1;
    key_out = NULL;
    chain_out = NULL;
    usage = "both";
    nvariants = 0;
    now = time(NULL);

    lf.subject = "localhost";
    lf.alt_names = names;
    lf.not_before = now - 3600;
    lf.not_after = now + 365L * 24 * 3600;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {

        case SIM_OPT_KEY_OUT:
            key_out = optarg;
            break;

        case SIM_OPT_CHAIN_OUT:
            chain_out = optarg;
            break;

        case SIM_OPT_USAGE:
            usage = optarg;
            break;

        case SIM_OPT_SUBJECT:
            if (*optarg == '\0' || strlen(optarg) > SIM_SUBJECT_MAX) {
                fprintf(stderr, "dstack-sim: invalid --subject \"%s\"\n",
                        optarg);
                return 1;
            }

            lf.subject = optarg;
            break;

        case SIM_OPT_ALT_NAME:
            if (lf.nalt_names == SIM_ALT_NAMES_MAX || *optarg == '\0') {
                fprintf(stderr, "dstack-sim: invalid --alt-name \"%s\" "
                                "(at most %d)\n", optarg, SIM_ALT_NAMES_MAX);
                return 1;
            }

            names[lf.nalt_names++] = optarg;
            break;

        case SIM_OPT_EXPIRED:
            lf.not_before = now - 2 * 365L * 24 * 3600;
            lf.not_after = now - 24 * 3600;
            break;

        case SIM_OPT_NOT_YET_VALID:
            lf.not_before = now + 24 * 3600;
            lf.not_after = now + 365L * 24 * 3600;
            break;

        case SIM_OPT_APP_ID_LEN:
            errno = 0;
            lf.variant_len = strtoul(optarg, &end, 10);

            if (*optarg < '0' || *optarg > '9' || *end != '\0'
                || errno != 0 || lf.variant_len > SIM_RAW_MAX)
            {
                fprintf(stderr, "dstack-sim: invalid --app-id-len \"%s\" "
                                "(0 to %d)\n", optarg, SIM_RAW_MAX);
                return 1;
            }

            lf.variant = SIM_APP_ID_LEN;
            nvariants++;
            break;

        case SIM_OPT_APP_ID_WRAP:
            if (strcmp(optarg, "single") != 0) {
                fprintf(stderr, "dstack-sim: invalid --app-id-wrap \"%s\" "
                                "(only \"single\")\n", optarg);
                return 1;
            }

            lf.variant = SIM_APP_ID_WRAP_SINGLE;
            nvariants++;
            break;

        case SIM_OPT_APP_ID_DUP:
            lf.variant = SIM_APP_ID_DUP;
            nvariants++;
            break;

        case SIM_OPT_APP_ID_TRAILING:
            lf.variant = SIM_APP_ID_TRAILING;
            nvariants++;
            break;

        case SIM_OPT_APP_ID_UTF8:
            lf.variant = SIM_APP_ID_UTF8;
            nvariants++;
            break;

        case SIM_OPT_NO_APP_ID:
            lf.variant = SIM_APP_ID_NONE;
            nvariants++;
            break;

        case SIM_OPT_APP_ID_RAW:
            rc = dstack_hex_decode(raw, SIM_RAW_MAX, optarg, strlen(optarg));
            if (rc < 0) {
                fprintf(stderr, "dstack-sim: invalid --app-id-raw \"%.64s\" "
                                "(hex, at most %d bytes)\n",
                        optarg, SIM_RAW_MAX);
                return 1;
            }

            lf.variant = SIM_APP_ID_RAW;
            lf.raw = raw;
            lf.raw_len = rc;
            nvariants++;
            break;

        case SIM_OPT_HELP:
            sim_usage(stdout);
            return 0;

        default:
            if (sim_ctx_option(&ctx, opt, optarg) != 0) {
                return 1;
            }
        }
    }

    if (key_out == NULL || chain_out == NULL || optind != argc) {
        fprintf(stderr, "dstack-sim: mkcert needs --key-out and "
                        "--chain-out\n");
        return 1;
    }

    if (strcmp(usage, "server") == 0) {
        lf.server_auth = 1;

    } else if (strcmp(usage, "client") == 0) {
        lf.client_auth = 1;

    } else if (strcmp(usage, "both") != 0) {
        fprintf(stderr, "dstack-sim: invalid --usage \"%s\" "
                        "(server, client or both)\n", usage);
        return 1;
    }

    if (nvariants > 1 || (nvariants != 0 && !ctx.kms)) {
        fprintf(stderr, "dstack-sim: at most one app_id variant, "
                        "and only with the kms profile\n");
        return 1;
    }

    /* no instance given: the app's own local CA in the no-kms profile */
    if (!sim_have_instance_id) {
        memcpy(ctx.instance_id, ctx.app_id, SIM_ID_LEN);
        sim_have_instance_id = 1;
    }

    if (sim_ctx_check(&ctx, 0) != 0 || sim_ctx_init(&ctx) != 0) {
        return 1;
    }

    lf.app_id = ctx.kms ? ctx.app_id : NULL;
    lf.hook = ctx.ra_tls_hook;
    lf.hook_data = ctx.ra_tls_data;

    rc = sim_issue(&ctx, &lf, &pem);
    sim_ctx_free(&ctx);

    if (rc != 0) {
        return 1;
    }

    for (len = 0, i = 0; i < pem.nchain; i++) {
        len += strlen(pem.chain[i]);
    }

    chain = malloc(len + 1);
    if (chain == NULL) {
        sim_pem_free(&pem);
        return 1;
    }

    for (p = chain, i = 0; i < pem.nchain; i++) {
        p = stpcpy(p, pem.chain[i]);
    }

    rc = sim_write_file(key_out, pem.key, strlen(pem.key), 0600);

    if (rc == 0) {
        rc = sim_write_file(chain_out, chain, len, 0644);
    }

    free(chain);
    sim_pem_free(&pem);

    return rc == 0 ? 0 : 1;
}


static int
sim_root_main(int argc, char **argv)
{
    int                    opt;
    char                   path[4096];
    const char            *dir;
    static struct option   options[] = {
        { "state-dir", required_argument, NULL, SIM_OPT_STATE_DIR },
        { "help", no_argument, NULL, SIM_OPT_HELP },
        { NULL, 0, NULL, 0 }
    };

    dir = NULL;

    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {

        case SIM_OPT_STATE_DIR:
            dir = optarg;
            break;

        case SIM_OPT_HELP:
            sim_usage(stdout);
            return 0;

        default:
            sim_usage(stderr);
            return 1;
        }
    }

    if (dir == NULL || optind != argc) {
        fprintf(stderr, "dstack-sim: root needs --state-dir\n");
        return 1;
    }

    if (sim_root_path(dir, path, sizeof(path)) != 0) {
        return 1;
    }

    printf("%s\n", path);

    return 0;
}


static int
sim_ctx_option(sim_ctx_t *ctx, int opt, const char *arg)
{
    switch (opt) {

    case SIM_OPT_STATE_DIR:
        ctx->state_dir = arg;
        return 0;

    case SIM_OPT_APP_ID:
        sim_have_app_id = 1;
        return sim_parse_hex("--app-id", arg, ctx->app_id, SIM_ID_LEN);

    case SIM_OPT_INSTANCE_ID:
        sim_have_instance_id = 1;
        return sim_parse_hex("--instance-id", arg, ctx->instance_id,
                             SIM_ID_LEN);

    case SIM_OPT_COMPOSE_HASH:
        sim_have_compose_hash = 1;
        return sim_parse_hex("--compose-hash", arg, ctx->compose_hash, 32);

    case SIM_OPT_QUOTE_TEMPLATE:
        return sim_attest_load(ctx, arg);

    case SIM_OPT_APP_NAME:
        if (*arg == '\0' || strlen(arg) > 255) {
            fprintf(stderr, "dstack-sim: invalid --app-name \"%s\"\n", arg);
            return -1;
        }

        ctx->app_name = arg;
        return 0;

    case SIM_OPT_PROFILE:
        if (strcmp(arg, "kms") == 0) {
            ctx->kms = 1;
            return 0;
        }

        if (strcmp(arg, "no-kms") == 0) {
            ctx->kms = 0;
            return 0;
        }

        fprintf(stderr, "dstack-sim: invalid --profile \"%s\" "
                        "(kms or no-kms)\n", arg);
        return -1;

    default:
        sim_usage(stderr);
        return -1;
    }
}


/* required options, and values derived from the app id when not given */

static int
sim_ctx_check(sim_ctx_t *ctx, int need_instance)
{
    char          hex[2 * SIM_ID_LEN + 1], buf[64];
    size_t        n;
    u_char        md[32];
    static char   name[16];

    if (ctx->state_dir == NULL || !sim_have_app_id
        || (need_instance && !sim_have_instance_id))
    {
        fprintf(stderr, "dstack-sim: --state-dir, --app-id%s are required\n",
                need_instance ? " and --instance-id" : "");
        return -1;
    }

    *dstack_hex_encode(hex, ctx->app_id, SIM_ID_LEN) = '\0';

    if (ctx->app_name == NULL) {
        snprintf(name, sizeof(name), "app-%.8s", hex);
        ctx->app_name = name;
    }

    if (!sim_have_compose_hash) {
        n = snprintf(buf, sizeof(buf), "dstack-sim compose:%s", hex);

        if (EVP_Digest(buf, n, md, NULL, EVP_sha256(), NULL) != 1) {
            return -1;
        }

        memcpy(ctx->compose_hash, md, 32);
    }

    return 0;
}


static int
sim_parse_hex(const char *opt, const char *hex, u_char *out, size_t len)
{
    if (strlen(hex) != 2 * len
        || dstack_hex_decode(out, len, hex, 2 * len) != (int) len)
    {
        fprintf(stderr, "dstack-sim: invalid %s \"%s\": need %zu hex "
                        "characters\n", opt, hex, 2 * len);
        return -1;
    }

    return 0;
}


static void
sim_usage(FILE *f)
{
    fprintf(f,
"usage: dstack-sim serve --socket PATH --state-dir DIR --app-id HEX40\n"
"                        --instance-id HEX40 [--profile kms|no-kms]\n"
"                        [--app-name NAME] [--compose-hash HEX64]\n"
"                        [--pidfile FILE] [--quote-template QUOTE]\n"
"       dstack-sim mkcert --state-dir DIR --app-id HEX40 --key-out FILE\n"
"                         --chain-out FILE [--profile kms|no-kms]\n"
"                         [--instance-id HEX40] [--usage server|client|both]\n"
"                         [--subject CN] [--alt-name NAME]...\n"
"                         [--expired | --not-yet-valid]\n"
"                         [--app-id-len N | --app-id-wrap single |\n"
"                          --app-id-dup | --app-id-trailing |\n"
"                          --app-id-type-utf8 | --no-app-id |\n"
"                          --app-id-raw HEX] [--quote-template QUOTE]\n"
"       dstack-sim root --state-dir DIR\n");
}


static void
sim_signal_handler(int signo)
{
    sim_stop = 1;
}
