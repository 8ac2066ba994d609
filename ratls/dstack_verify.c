/*
 * The verifier's command line, run as dstack-verify and as "wgctl verify":
 * offline verification of a dstack attestation, from an RA-TLS
 * certificate (PEM or DER), a bare TDX quote (binary or hex) or an
 * attestation blob (V0 SCALE or V1 MessagePack).  Built on
 * ratls/dstack_attest.h; docs/attestation.md describes the checks.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <jansson.h>

#include "dstack_attest.h"
#include "dstack_hex.h"


#define DSTACK_VERIFY_DEFAULT_ROOT  "/etc/dstack/sgx-root-ca.pem"
#define DSTACK_VERIFY_MAX_INPUT     (1024 * 1024)


typedef struct {
    const char            *input;
    const char            *collateral;
    const char            *root;
    int                    json;
    dstack_attest_opts_t   opts;
} dstack_verify_args_t;


int dstack_verify_main(int argc, char **argv);

static void dstack_verify_usage(FILE *f, const char *prog);
static int dstack_verify_parse_args(int argc, char **argv,
    dstack_verify_args_t *args);
static int dstack_verify_load_input(const char *path, u_char **data,
    size_t *len, X509 **cert, dstack_attest_t *att, const char **err);
static const char *dstack_verify_format(dstack_attest_fmt_e f);
static void dstack_verify_print(const dstack_verify_args_t *args,
    const dstack_attest_t *att, const dstack_attest_result_t *res);
static int dstack_verify_print_json(const dstack_verify_args_t *args,
    const dstack_attest_t *att, const dstack_attest_result_t *res);


static void
dstack_verify_usage(FILE *f, const char *prog)
{
    fprintf(f,
        "Usage: %s <cert.pem|cert.der|quote.bin|quote.hex|attestation.bin>\n"
        "          [--collateral FILE] [--root FILE] [--now RFC3339]\n"
        "          [--require bind|full] [--tcb-accept STATUS,...]\n"
        "          [--allow-debug] [--json]\n"
        "\n"
        "Verifies, offline, the TDX attestation that a dstack RA-TLS\n"
        "certificate carries (or a bare quote or attestation blob).\n"
        "\n"
        "  --collateral FILE  Intel collateral (JSON) for the TCB status\n"
        "  --root FILE        pinned Intel SGX Root CA (PEM or DER);\n"
        "                     default $DSTACK_SGX_ROOT_CA, else\n"
        "                     " DSTACK_VERIFY_DEFAULT_ROOT "\n"
        "  --now TIME         evaluate certificates, CRLs and collateral at\n"
        "                     this time (e.g. 2025-07-01T00:00:00Z)\n"
        "  --require bind     only the binding and the RTMR3 replay must\n"
        "                     pass\n"
        "  --require full     every check must pass or be skipped (default)\n"
        "  --tcb-accept LIST  accepted TCB statuses, comma separated\n"
        "                     (default: all but Revoked)\n"
        "  --allow-debug      accept a TD in debug mode\n"
        "  --json             machine-readable output\n"
        "\n"
        "Exit status is 0 only when every required check passes.\n",
        prog);
}


static int
dstack_verify_parse_args(int argc, char **argv, dstack_verify_args_t *args)
{
    int          i, s;
    const char  *v, *p, *c;

    memset(args, 0, sizeof(dstack_verify_args_t));
    args->opts.require = DSTACK_REQUIRE_FULL;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            dstack_verify_usage(stdout, argv[0]);
            exit(0);
        }

        if (strcmp(argv[i], "--json") == 0) {
            args->json = 1;
            continue;
        }

        if (strcmp(argv[i], "--allow-debug") == 0) {
            args->opts.allow_debug = 1;
            continue;
        }

        if (argv[i][0] != '-' || argv[i][1] == '\0') {
            if (args->input != NULL) {
                fprintf(stderr, "%s: more than one input: \"%s\"\n",
                        argv[0], argv[i]);
                return -1;
            }

            args->input = argv[i];
            continue;
        }

        if (i + 1 == argc) {
            fprintf(stderr, "%s: option \"%s\" needs a value\n",
                    argv[0], argv[i]);
            return -1;
        }

        v = argv[++i];

        if (strcmp(argv[i - 1], "--collateral") == 0) {
            args->collateral = v;

        } else if (strcmp(argv[i - 1], "--root") == 0) {
            args->root = v;

        } else if (strcmp(argv[i - 1], "--now") == 0) {
            if (dstack_time_parse(v, strlen(v), &args->opts.now) != 0
                || args->opts.now <= 0)
            {
                fprintf(stderr, "%s: invalid time \"%s\" (want RFC 3339, "
                        "e.g. 2025-07-01T00:00:00Z)\n", argv[0], v);
                return -1;
            }

        } else if (strcmp(argv[i - 1], "--require") == 0) {
            if (strcmp(v, "bind") == 0) {
                args->opts.require = DSTACK_REQUIRE_BIND;

            } else if (strcmp(v, "full") == 0) {
                args->opts.require = DSTACK_REQUIRE_FULL;

            } else {
                fprintf(stderr, "%s: invalid --require \"%s\" "
                        "(bind or full)\n", argv[0], v);
                return -1;
            }

        } else if (strcmp(argv[i - 1], "--tcb-accept") == 0) {
            args->opts.tcb_accept = 0;

            for (p = v; *p != '\0'; p = (*c == ',') ? c + 1 : c) {
                c = strchr(p, ',');

                if (c == NULL) {
                    c = p + strlen(p);
                }

                s = dstack_tcb_status_parse(p, (size_t) (c - p));

                if (s < 0) {
                    fprintf(stderr, "%s: unknown TCB status \"%.*s\"\n",
                            argv[0], (int) (c - p), p);
                    return -1;
                }

                args->opts.tcb_accept |= DSTACK_TCB_ACCEPT(s);
            }

        } else {
            fprintf(stderr, "%s: unknown option \"%s\"\n", argv[0],
                    argv[i - 1]);
            return -1;
        }
    }

    if (args->input == NULL) {
        fprintf(stderr, "%s: no input file\n", argv[0]);
        return -1;
    }

    return 0;
}


/*
 * hex text, with optional white space and 0x prefix, decoded in place;
 * -1 leaves the data changed (the caller reads the file again)
 */
static int
dstack_verify_unhex(u_char *data, size_t *len)
{
    u_char   c;
    size_t   i, n;
    ssize_t  rc;

    i = (*len >= 2 && data[0] == '0' && (data[1] | 0x20) == 'x') ? 2 : 0;

    for (n = 0; i < *len; i++) {
        c = data[i];

        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            data[n++] = c;
        }
    }

    /* each byte is written behind the two characters it comes from */

    rc = dstack_hex_decode(data, n / 2, (const char *) data, n);

    if (rc <= 0) {
        return -1;
    }

    *len = (size_t) rc;

    return 0;
}


static int
dstack_verify_load_input(const char *path, u_char **data, size_t *len,
    X509 **cert, dstack_attest_t *att, const char **err)
{
    BIO           *bio;
    size_t         i;
    const u_char  *p;

    *cert = NULL;

    if (dstack_attest_load_file(path, data, len, DSTACK_VERIFY_MAX_INPUT)
        != 0)
    {
        *err = "cannot read the input file";
        return -1;
    }

    /* a quote's PCK chain is PEM too: only a leading header counts */
    for (i = 0; i < *len && (*data)[i] <= ' '; i++) {
        /* void */
    }

    if (*len - i >= 27
        && memcmp(*data + i, "-----BEGIN CERTIFICATE-----", 27) == 0)
    {
        bio = BIO_new_mem_buf(*data, (int) *len);
        *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL)
                            : NULL;
        BIO_free(bio);

        if (*cert == NULL) {
            ERR_clear_error();
            *err = "cannot parse the PEM certificate";
            return -1;
        }

        return dstack_attest_parse_cert(*cert, att, err);
    }

    if (*len > 4 && (*data)[0] == 0x30 && ((*data)[1] & 0x80)) {
        p = *data;
        *cert = d2i_X509(NULL, &p, (long) *len);

        if (*cert != NULL && p == *data + *len) {
            return dstack_attest_parse_cert(*cert, att, err);
        }

        X509_free(*cert);
        *cert = NULL;
        ERR_clear_error();
    }

    if (dstack_verify_unhex(*data, len) != 0) {
        /* not hex text: the file was binary all along */
        free(*data);

        if (dstack_attest_load_file(path, data, len,
                                    DSTACK_VERIFY_MAX_INPUT) != 0)
        {
            *err = "cannot read the input file";
            return -1;
        }
    }

    return dstack_attest_parse_blob(*data, *len, att, err);
}


static const char *
dstack_verify_format(dstack_attest_fmt_e f)
{
    switch (f) {
    case DSTACK_ATTEST_FMT_QUOTE:
        return "quote";
    case DSTACK_ATTEST_FMT_V0:
        return "attestation-v0";
    case DSTACK_ATTEST_FMT_V1:
        return "attestation-v1";
    case DSTACK_ATTEST_FMT_LEGACY:
        return "legacy";
    default:
        return "none";
    }
}


static void
dstack_verify_print_name(const dstack_event_t *ev)
{
    size_t  i;

    for (i = 0; i < ev->name_len && i < 32; i++) {
        putchar(ev->name[i] >= 0x20 && ev->name[i] < 0x7f ? ev->name[i]
                                                            : '?');
    }

    printf("%*s", (int) (i < 20 ? 20 - i : 1), "");
}


static void
dstack_verify_print(const dstack_verify_args_t *args,
    const dstack_attest_t *att, const dstack_attest_result_t *res)
{
    int                    i;
    char                   hex[64];
    size_t                 j, k;
    unsigned               required;
    const dstack_event_t  *ev;

    static const char  *rtmr[4] = { "rtmr0", "rtmr1", "rtmr2", "rtmr3" };

    printf("%-16s %s (%s%s)\n", "input", args->input,
           dstack_verify_format(att->format),
           att->has_cert ? ", from a certificate" : "");
    printf("%-16s TDX quote v%u, %s\n", "quote", att->quote.version,
           att->quote.body_type == 3 ? "TD 1.5" : "TD 1.0");
    printf("\n");

    for (i = 0; i < DSTACK_CHECK_N; i++) {
        required = args->opts.require & DSTACK_REQUIRE(i);
        printf("%-16s %-8s %s%s\n", dstack_check_name(i),
               dstack_check_status_name(res->check[i].status),
               res->check[i].reason, required ? "" : " (not required)");
    }

    printf("\n");
    printf("%-16s %s\n", "mrtd", res->mrtd);

    for (i = 0; i < 4; i++) {
        printf("%-16s %s\n", rtmr[i], res->rtmr[i]);
    }

    printf("%-16s %s\n", "report_data", res->report_data);

    if (res->rtmr3_replayed[0] != '\0') {
        printf("%-16s %s\n", "rtmr3_replayed", res->rtmr3_replayed);
    }

    printf("%-16s %s\n", "app_id", res->app_id[0] ? res->app_id : "-");
    printf("%-16s %s\n", "compose_hash",
           res->compose_hash[0] ? res->compose_hash : "-");
    printf("%-16s %s\n", "instance_id",
           res->instance_id[0] ? res->instance_id : "-");
    printf("%-16s %s\n", "tcb_status",
           res->tcb_status[0] ? res->tcb_status : "-");

    if (res->advisory_ids[0] != '\0') {
        printf("%-16s %s\n", "advisory_ids", res->advisory_ids);
    }

    if (att->nevents > 0) {
        printf("\nruntime events (%zu)\n", att->nevents);

        for (j = 0; j < att->nevents; j++) {
            ev = &att->events[j];
            printf("  ");
            dstack_verify_print_name(ev);

            k = ev->payload_len < 32 ? ev->payload_len : 32;
            printf("%.*s", (int) (dstack_hex_encode(hex, ev->payload, k) - hex),
                   hex);

            printf("%s%s\n", ev->payload_len > 32 ? "..." : "",
                   ev->digest_version == 2 ? " (v2 digest)" : "");
        }
    }

    printf("\n%-16s %s\n", "result", res->ok ? "OK" : "FAILED");
}


static json_t *
dstack_verify_hex_json(const u_char *p, size_t n)
{
    char    *s;
    json_t  *j;

    s = malloc(2 * n + 1);

    if (s == NULL) {
        return NULL;
    }

    j = json_stringn(s, dstack_hex_encode(s, p, n) - s);
    free(s);

    return j;
}


static int
dstack_verify_print_json(const dstack_verify_args_t *args,
    const dstack_attest_t *att, const dstack_attest_result_t *res)
{
    int                    i;
    char                  *out;
    size_t                 j;
    json_t                *doc, *checks, *m, *events, *ev, *adv, *name;
    const char            *p, *c;
    const dstack_event_t  *e;

    static const char  *rtmr[4] = { "rtmr0", "rtmr1", "rtmr2", "rtmr3" };

    doc = json_object();
    checks = json_object();
    m = json_object();
    events = json_array();
    adv = json_array();

    if (doc == NULL || checks == NULL || m == NULL || events == NULL
        || adv == NULL)
    {
        goto failed;
    }

    json_object_set_new(doc, "input", json_string(args->input));
    json_object_set_new(doc, "format",
                        json_string(dstack_verify_format(att->format)));
    json_object_set_new(doc, "from_certificate",
                        json_boolean(att->has_cert));
    json_object_set_new(doc, "quote_version",
                        json_integer(att->quote.version));
    json_object_set_new(doc, "ok", json_boolean(res->ok));

    for (i = 0; i < DSTACK_CHECK_N; i++) {
        json_object_set_new(checks, dstack_check_name(i),
            json_pack("{s:s, s:s, s:b}",
                      "status", dstack_check_status_name(res->check[i].status),
                      "reason", res->check[i].reason,
                      "required",
                      (args->opts.require & DSTACK_REQUIRE(i)) != 0));
    }

    json_object_set_new(doc, "checks", checks);

    json_object_set_new(m, "mrtd", json_string(res->mrtd));

    for (i = 0; i < 4; i++) {
        json_object_set_new(m, rtmr[i], json_string(res->rtmr[i]));
    }

    json_object_set_new(m, "report_data", json_string(res->report_data));
    json_object_set_new(m, "rtmr3_replayed",
                        json_string(res->rtmr3_replayed));
    json_object_set_new(m, "app_id", json_string(res->app_id));
    json_object_set_new(m, "compose_hash", json_string(res->compose_hash));
    json_object_set_new(m, "instance_id", json_string(res->instance_id));
    json_object_set_new(m, "tcb_status", json_string(res->tcb_status));
    json_object_set_new(doc, "measurements", m);

    for (p = res->advisory_ids; *p != '\0'; p = (*c == ',') ? c + 1 : c) {
        c = strchr(p, ',');

        if (c == NULL) {
            c = p + strlen(p);
        }

        json_array_append_new(adv, json_stringn(p, (size_t) (c - p)));
    }

    json_object_set_new(doc, "advisory_ids", adv);

    for (j = 0; j < att->nevents; j++) {
        e = &att->events[j];
        name = json_stringn((const char *) e->name, e->name_len);

        ev = json_object();

        if (ev == NULL) {
            json_decref(name);
            goto failed_events;
        }

        /* a name that is not UTF-8 is shown as hex */
        json_object_set_new(ev, "event", name != NULL ? name
                            : dstack_verify_hex_json(e->name, e->name_len));
        json_object_set_new(ev, "payload",
                            dstack_verify_hex_json(e->payload,
                                                   e->payload_len));
        json_object_set_new(ev, "digest_version",
                            json_integer(e->digest_version));
        json_array_append_new(events, ev);
    }

    json_object_set_new(doc, "events", events);

    out = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);

    if (out == NULL) {
        return -1;
    }

    printf("%s\n", out);
    free(out);

    return 0;

failed:

    json_decref(adv);
    json_decref(m);
    json_decref(checks);
    json_decref(doc);

failed_events:

    json_decref(events);
    return -1;
}


int
dstack_verify_main(int argc, char **argv)
{
    int                     rc;
    X509                   *cert;
    u_char                 *data, *coll_data;
    size_t                  len, coll_len;
    const char             *err, *root;
    dstack_attest_t         att;
    dstack_verify_args_t    args;
    dstack_collateral_t    *coll;
    dstack_attest_result_t  res;

    rc = 1;
    data = NULL;
    cert = NULL;
    coll = NULL;

    dstack_attest_init(&att);

    if (dstack_verify_parse_args(argc, argv, &args) != 0) {
        dstack_verify_usage(stderr, argv[0]);
        return 1;
    }

    root = args.root;

    if (root == NULL) {
        root = getenv("DSTACK_SGX_ROOT_CA");
    }

    if (root == NULL || root[0] == '\0') {
        root = DSTACK_VERIFY_DEFAULT_ROOT;
    }

    args.opts.root = dstack_attest_load_root(root, &err);

    if (args.opts.root == NULL && args.root != NULL) {
        fprintf(stderr, "%s: root \"%s\": %s\n", argv[0], root, err);
        goto done;
    }

    if (args.opts.root == NULL) {
        fprintf(stderr, "%s: warning: no Intel root at \"%s\" (use --root): "
                "the PCK chain cannot pass\n", argv[0], root);
    }

    if (args.collateral != NULL) {
        if (dstack_attest_load_file(args.collateral, &coll_data, &coll_len,
                                    DSTACK_VERIFY_MAX_INPUT) != 0)
        {
            fprintf(stderr, "%s: cannot read collateral \"%s\"\n", argv[0],
                    args.collateral);
            goto done;
        }

        coll = dstack_collateral_parse(coll_data, coll_len, &err);
        free(coll_data);

        if (coll == NULL) {
            fprintf(stderr, "%s: collateral \"%s\": %s\n", argv[0],
                    args.collateral, err);
            goto done;
        }

        args.opts.collateral = coll;
    }

    if (dstack_verify_load_input(args.input, &data, &len, &cert, &att, &err)
        != 0)
    {
        fprintf(stderr, "%s: \"%s\": %s\n", argv[0], args.input, err);
        goto done;
    }

    dstack_attest_verify(&att, &args.opts, &res);

    if (args.json) {
        if (dstack_verify_print_json(&args, &att, &res) != 0) {
            fprintf(stderr, "%s: out of memory\n", argv[0]);
            goto done;
        }

    } else {
        dstack_verify_print(&args, &att, &res);
    }

    rc = res.ok ? 0 : 1;

done:

    dstack_attest_free(&att);
    X509_free(cert);
    free(data);
    dstack_collateral_free(coll);
    X509_free(args.opts.root);
    ERR_clear_error();

    return rc;
}
