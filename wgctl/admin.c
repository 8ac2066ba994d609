/*
 * wgctl nodes list|delete|expire, wgctl preauthkeys create|list|expire:
 * the VPC server's admin commands, straight on its Redis (hiredis,
 * synchronous, every wait bounded).  They run the control plane's own Lua
 * scripts (lua/cp_*.lua, lua/ngx_http_dstack_vpc_cp_lua.c), so
 * they keep its data model, and a deleted or expired node leaves every
 * peer's map at once ("rm" on the events channel).
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/time.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "wgctl.h"
#include "wgdev.h"
#include "ngx_http_dstack_vpc_cp_lua.h"


#define ADMIN_REDIS_DEFAULT     "unix:/run/dstack-vpc/redis.sock"
#define ADMIN_PREFIX_DEFAULT    "dstack:vpc:"
#define ADMIN_TIMEOUT_DEFAULT   5000        /* ms */
#define ADMIN_PREFIX_MAX        128
#define ADMIN_KEY_ID_LEN        12
#define ADMIN_KEY_SECRET_LEN    64
#define ADMIN_KEY_LEN           (sizeof("hskey-auth-") - 1             \
                                 + ADMIN_KEY_ID_LEN + 1                \
                                 + ADMIN_KEY_SECRET_LEN)
#define ADMIN_DOMAIN            "dstack.internal"


typedef struct {
    const char              *redis;
    const char              *prefix;
    long                     timeout;       /* ms */
    int                      json;
    int                      reusable;
    int                      ephemeral;
    long                     expiration;    /* s */
    int                      nargs;
    char                    *args[2];
} admin_opts_t;


static void nodes_usage(FILE *out);
static void preauthkeys_usage(FILE *out);
static int admin_options(int argc, char **argv, admin_opts_t *o,
    int keys, void (*usage)(FILE *out));
static long admin_duration(const char *s);
static redisContext *admin_connect(const admin_opts_t *o);
static redisReply *admin_eval(redisContext *c, const char *script,
    const admin_opts_t *o, int argc, const char **argv);
static const char *admin_field(redisReply *r, size_t i);
static long long admin_number(redisReply *r, size_t i);
static void admin_time(char *buf, size_t size, long long t);
static void admin_ago(char *buf, size_t size, long long t);
static int admin_key_random(char *dst, size_t len);
static int admin_sha256_hex(char *dst, const char *data, size_t len);

static int nodes_list(redisContext *c, const admin_opts_t *o);
static int nodes_apps(redisContext *c, const admin_opts_t *o);
static int nodes_change(redisContext *c, const admin_opts_t *o,
    const char *what);
static int preauthkeys_create(redisContext *c, const admin_opts_t *o);
static int preauthkeys_list(redisContext *c, const admin_opts_t *o);
static int preauthkeys_expire(redisContext *c, const admin_opts_t *o);


static void
nodes_usage(FILE *out)
{
    fprintf(out,
        "Usage: %s nodes list [--json] [<options>]\n"
        "       %s nodes apps [--json] [<options>]\n"
        "       %s nodes delete <node> [<options>]\n"
        "       %s nodes expire <node> [<options>]\n"
        "\n"
        "<node> is a node id, a name (\"web\" or \"web.%s\") or a node\n"
        "key (\"nodekey:<64 hex>\").  \"delete\" removes the node and frees\n"
        "its address; \"expire\" expires its key: it leaves the maps until\n"
        "it registers again with a pre-auth key.  \"apps\" shows what the\n"
        "per-app limits count: live nodes (and of them online), outstanding\n"
        "pre-auth keys, node records.\n"
        "\n"
        "Options:\n"
        "  --redis <host:port|unix:path>  the VPC's Redis (default %s;\n"
        "                                 password from $REDISCLI_AUTH)\n"
        "  --prefix <prefix>              key prefix (default %s)\n"
        "  --timeout <time>               per command (default 5s)\n",
        wgctl_prog, wgctl_prog, wgctl_prog, wgctl_prog, ADMIN_DOMAIN,
        ADMIN_REDIS_DEFAULT, ADMIN_PREFIX_DEFAULT);
}


static void
preauthkeys_usage(FILE *out)
{
    fprintf(out,
        "Usage: %s preauthkeys create [--reusable] [--ephemeral]\n"
        "                  [--expiration <time>] [--json] [<options>]\n"
        "       %s preauthkeys list [--json] [<options>]\n"
        "       %s preauthkeys expire <key id|key> [<options>]\n"
        "\n"
        "\"create\" prints a new key (hskey-auth-...) once; Redis keeps only\n"
        "its SHA-256.  <time> is seconds or a number with s, m, h or d\n"
        "(default 1h).  \"expire\" revokes a key at once.\n"
        "\n"
        "Options:\n"
        "  --redis <host:port|unix:path>  the VPC's Redis (default %s;\n"
        "                                 password from $REDISCLI_AUTH)\n"
        "  --prefix <prefix>              key prefix (default %s)\n"
        "  --timeout <time>               per command (default 5s)\n",
        wgctl_prog, wgctl_prog, wgctl_prog, ADMIN_REDIS_DEFAULT,
        ADMIN_PREFIX_DEFAULT);
}


/*
 * The action and up to one operand, then the options in any order.
 * Returns 0, 1 for --help (usage printed), or -1 (message printed).
 */

static int
admin_options(int argc, char **argv, admin_opts_t *o, int keys,
    void (*usage)(FILE *out))
{
    int          i;
    char        *name, *value;
    const char  *p;

    memset(o, 0, sizeof(admin_opts_t));
    o->redis = getenv("WGCTL_REDIS") ? getenv("WGCTL_REDIS")
                                     : ADMIN_REDIS_DEFAULT;
    o->prefix = ADMIN_PREFIX_DEFAULT;
    o->timeout = ADMIN_TIMEOUT_DEFAULT;
    o->expiration = 3600;

    if (wgctl_is_help(argc, argv)) {
        usage(stdout);
        return 1;
    }

    for (i = 1; i < argc; i++) {
        name = argv[i];

        if (strncmp(name, "--", 2) != 0) {
            if (o->nargs == 2) {
                fprintf(stderr, "%s: unexpected argument \"%s\"\n",
                        wgctl_prog, name);
                goto usage;
            }

            o->args[o->nargs++] = name;
            continue;
        }

        if (strcmp(name, "--json") == 0) {
            o->json = 1;
            continue;
        }

        if (keys && strcmp(name, "--reusable") == 0) {
            o->reusable = 1;
            continue;
        }

        if (keys && strcmp(name, "--ephemeral") == 0) {
            o->ephemeral = 1;
            continue;
        }

        value = strchr(name, '=');

        if (value != NULL) {
            *value++ = '\0';

        } else if (i + 1 < argc) {
            value = argv[++i];

        } else {
            fprintf(stderr, "%s: option \"%s\" needs a value\n", wgctl_prog,
                    name);
            goto usage;
        }

        if (strcmp(name, "--redis") == 0) {
            o->redis = value;

        } else if (strcmp(name, "--prefix") == 0) {
            if (strlen(value) > ADMIN_PREFIX_MAX) {
                fprintf(stderr, "%s: prefix longer than %d\n", wgctl_prog,
                        ADMIN_PREFIX_MAX);
                return -1;
            }

            o->prefix = value;

        } else if (strcmp(name, "--timeout") == 0) {
            o->timeout = admin_duration(value);

            if (o->timeout <= 0) {
                fprintf(stderr, "%s: invalid timeout \"%s\"\n", wgctl_prog,
                        value);
                return -1;
            }

            /* seconds by default, as the other durations */
            o->timeout *= 1000;

        } else if (keys && strcmp(name, "--expiration") == 0) {
            o->expiration = admin_duration(value);

            if (o->expiration <= 0) {
                fprintf(stderr, "%s: invalid expiration \"%s\"\n",
                        wgctl_prog, value);
                return -1;
            }

        } else {
            fprintf(stderr, "%s: unknown option \"%s\"\n", wgctl_prog, name);
            goto usage;
        }
    }

    for (p = o->prefix; *p; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            fprintf(stderr, "%s: invalid prefix \"%s\"\n", wgctl_prog,
                    o->prefix);
            return -1;
        }
    }

    return 0;

usage:

    usage(stderr);
    return -1;
}


/* "90", "90s", "15m", "1h", "2d"; -1 if not one of those */

static long
admin_duration(const char *s)
{
    char  *end;
    long   n;

    errno = 0;
    n = strtol(s, &end, 10);

    if (errno != 0 || end == s || n <= 0 || n > 100L * 365 * 86400) {
        return -1;
    }

    if (*end == '\0' || strcmp(end, "s") == 0) {
        return n;
    }

    if (strcmp(end, "m") == 0) {
        return n * 60;
    }

    if (strcmp(end, "h") == 0) {
        return n * 3600;
    }

    if (strcmp(end, "d") == 0) {
        return n * 86400;
    }

    return -1;
}


static redisContext *
admin_connect(const admin_opts_t *o)
{
    long             port;
    char             host[256], *end;
    const char      *colon, *pass;
    redisReply      *r;
    redisContext    *c;
    struct timeval   tv;

    tv.tv_sec = o->timeout / 1000;
    tv.tv_usec = (o->timeout % 1000) * 1000;

    if (strncmp(o->redis, "unix:", 5) == 0) {
        c = redisConnectUnixWithTimeout(o->redis + 5, tv);

    } else {
        colon = strrchr(o->redis, ':');
        port = 6379;

        if (colon != NULL && strchr(colon, ']') == NULL) {
            errno = 0;
            port = strtol(colon + 1, &end, 10);

            if (errno != 0 || *end != '\0' || port < 1 || port > 65535) {
                fprintf(stderr, "%s: invalid Redis address \"%s\"\n",
                        wgctl_prog, o->redis);
                return NULL;
            }

        } else {
            colon = o->redis + strlen(o->redis);
        }

        if (colon - o->redis >= (long) sizeof(host) || colon == o->redis) {
            fprintf(stderr, "%s: invalid Redis address \"%s\"\n",
                    wgctl_prog, o->redis);
            return NULL;
        }

        memcpy(host, o->redis, colon - o->redis);
        host[colon - o->redis] = '\0';

        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
            memmove(host, host + 1, strlen(host) - 2);
            host[strlen(host) - 2] = '\0';
        }

        c = redisConnectWithTimeout(host, (int) port, tv);
    }

    if (c == NULL || c->err) {
        fprintf(stderr, "%s: cannot connect to Redis at \"%s\": %s\n",
                wgctl_prog, o->redis, c ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }

    if (redisSetTimeout(c, tv) != REDIS_OK) {
        fprintf(stderr, "%s: cannot set a timeout on \"%s\"\n", wgctl_prog,
                o->redis);
        redisFree(c);
        return NULL;
    }

    pass = getenv("REDISCLI_AUTH");

    if (pass != NULL && pass[0] != '\0') {
        r = redisCommand(c, "AUTH %s", pass);

        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "%s: Redis at \"%s\" refused the password: %s\n",
                    wgctl_prog, o->redis,
                    r ? r->str : c->errstr);
            freeReplyObject(r);
            redisFree(c);
            return NULL;
        }

        freeReplyObject(r);
    }

    return c;
}


/* EVAL <script> 0 <prefix> <argv...>; NULL after printing why */

static redisReply *
admin_eval(redisContext *c, const char *script, const admin_opts_t *o,
    int argc, const char **argv)
{
    int          i;
    size_t       lens[10];
    const char  *args[10];
    redisReply  *r;

    if (argc > 6) {
        return NULL;
    }

    args[0] = "EVAL";
    args[1] = script;
    args[2] = "0";
    args[3] = o->prefix;

    for (i = 0; i < argc; i++) {
        args[4 + i] = argv[i];
    }

    for (i = 0; i < 4 + argc; i++) {
        lens[i] = strlen(args[i]);
    }

    r = redisCommandArgv(c, 4 + argc, args, lens);

    if (r == NULL) {
        fprintf(stderr, "%s: Redis at \"%s\": %s\n", wgctl_prog, o->redis,
                c->errstr[0] ? c->errstr : "no reply");
        return NULL;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "%s: Redis at \"%s\": %s\n", wgctl_prog, o->redis,
                r->str);
        freeReplyObject(r);
        return NULL;
    }

    return r;
}


static const char *
admin_field(redisReply *r, size_t i)
{
    if (i >= r->elements || r->element[i]->type != REDIS_REPLY_STRING) {
        return "";
    }

    return r->element[i]->str;
}


static long long
admin_number(redisReply *r, size_t i)
{
    return strtoll(admin_field(r, i), NULL, 10);
}


/* Unix seconds as RFC 3339 in UTC */

static void
admin_time(char *buf, size_t size, long long t)
{
    time_t     tt;
    struct tm  tm;

    tt = (time_t) t;

    if (t <= 0 || gmtime_r(&tt, &tm) == NULL) {
        snprintf(buf, size, "-");
        return;
    }

    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}


static void
admin_ago(char *buf, size_t size, long long t)
{
    long long  d;

    if (t <= 0) {
        snprintf(buf, size, "never");
        return;
    }

    d = (long long) time(NULL) - t;

    if (d < 0) {
        d = 0;
    }

    if (d < 120) {
        snprintf(buf, size, "%lld s ago", d);

    } else if (d < 7200) {
        snprintf(buf, size, "%lld min ago", d / 60);

    } else if (d < 172800) {
        snprintf(buf, size, "%lld h ago", d / 3600);

    } else {
        snprintf(buf, size, "%lld days ago", d / 86400);
    }
}


/* base62, uniformly: the alphabet of the keys /api/register mints */

static int
admin_key_random(char *dst, size_t len)
{
    size_t          n, i;
    unsigned char   buf[64];

    static const char  base62[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    n = 0;

    while (n < len) {
        if (RAND_bytes(buf, sizeof(buf)) != 1) {
            OPENSSL_cleanse(buf, sizeof(buf));
            return -1;
        }

        for (i = 0; i < sizeof(buf) && n < len; i++) {
            /* 248 = 4 * 62: larger bytes would favour the first letters */
            if (buf[i] < 248) {
                dst[n++] = base62[buf[i] % 62];
            }
        }
    }

    OPENSSL_cleanse(buf, sizeof(buf));

    return 0;
}


/* a SHA-256 is key-sized: the key's hex encoder writes it */

static int
admin_sha256_hex(char *dst, const char *data, size_t len)
{
    unsigned int   mdlen;
    unsigned char  md[EVP_MAX_MD_SIZE];

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1
        || mdlen != WG_KEY_SIZE)
    {
        return -1;
    }

    wg_key_to_hex(dst, md);

    return 0;
}


int
nodes_main(int argc, char **argv)
{
    int            rc;
    redisContext  *c;
    admin_opts_t   o;

    rc = admin_options(argc, argv, &o, 0, nodes_usage);
    if (rc != 0) {
        return rc > 0 ? 0 : 1;
    }

    if (o.nargs == 0
        || !(((strcmp(o.args[0], "list") == 0
               || strcmp(o.args[0], "apps") == 0)
              && o.nargs == 1)
             || ((strcmp(o.args[0], "delete") == 0
                  || strcmp(o.args[0], "expire") == 0)
                 && o.nargs == 2)))
    {
        nodes_usage(stderr);
        return 1;
    }

    c = admin_connect(&o);
    if (c == NULL) {
        return 1;
    }

    if (strcmp(o.args[0], "list") == 0) {
        rc = nodes_list(c, &o);

    } else if (strcmp(o.args[0], "apps") == 0) {
        rc = nodes_apps(c, &o);

    } else {
        rc = nodes_change(c, &o, o.args[0]);
    }

    redisFree(c);

    return rc;
}


static int
nodes_list(redisContext *c, const admin_opts_t *o)
{
    char         seen[32], expires[32], created[32], app[16];
    size_t       i, n, f;
    json_t      *all, *node, *eps;
    redisReply  *r;
    const char  *s, *e;
    long long    exp;

    r = admin_eval(c, ngx_http_dstack_vpc_cp_lua_admin_nodes, o, 0, NULL);
    if (r == NULL) {
        return 1;
    }

    if (r->type != REDIS_REPLY_ARRAY
        || r->elements % NGX_HTTP_DSTACK_VPC_CP_ADMIN_FIELDS)
    {
        fprintf(stderr, "%s: unexpected reply from Redis\n", wgctl_prog);
        freeReplyObject(r);
        return 1;
    }

    n = r->elements / NGX_HTTP_DSTACK_VPC_CP_ADMIN_FIELDS;
    all = o->json ? json_array() : NULL;

    if (!o->json) {
        printf("%-6s %-32s %-15s %-6s %-14s %-9s %-20s %s\n", "ID", "NAME",
               "ADDRESS", "ONLINE", "LAST SEEN", "EPHEMERAL", "KEY EXPIRES",
               "APP");
    }

    for (i = 0; i < n; i++) {
        f = i * NGX_HTTP_DSTACK_VPC_CP_ADMIN_FIELDS;
        exp = admin_number(r, f + 9);

        if (exp > 0) {
            admin_time(expires, sizeof(expires), exp);

        } else {
            snprintf(expires, sizeof(expires), "never");
        }

        if (!o->json) {
            admin_ago(seen, sizeof(seen), admin_number(r, f + 4));
            snprintf(app, sizeof(app), "%.12s", admin_field(r, f + 6));

            printf("%-6s %-32s %-15s %-6s %-14s %-9s %-20s %s\n",
                   admin_field(r, f), admin_field(r, f + 1),
                   admin_field(r, f + 2),
                   strcmp(admin_field(r, f + 3), "1") == 0 ? "yes" : "no",
                   seen,
                   strcmp(admin_field(r, f + 5), "1") == 0 ? "yes" : "no",
                   exp > 0 && exp <= (long long) time(NULL) ? "expired"
                                                            : expires,
                   app);
            continue;
        }

        node = json_object();
        eps = json_array();

        if (node == NULL || eps == NULL || all == NULL) {
            json_decref(node);
            json_decref(eps);
            json_decref(all);
            freeReplyObject(r);
            return 1;
        }

        for (s = admin_field(r, f + 10); *s; s = *e ? e + 1 : e) {
            e = strchr(s, ',');
            if (e == NULL) {
                e = s + strlen(s);
            }

            json_array_append_new(eps, json_stringn(s, e - s));
        }

        admin_time(seen, sizeof(seen), admin_number(r, f + 4));
        admin_time(created, sizeof(created), admin_number(r, f + 11));

        json_object_set_new(node, "id", json_integer(admin_number(r, f)));
        json_object_set_new(node, "name", json_string(admin_field(r, f + 1)));
        json_object_set_new(node, "address",
                            json_string(admin_field(r, f + 2)));
        json_object_set_new(node, "online",
                            json_boolean(strcmp(admin_field(r, f + 3), "1")
                                         == 0));
        json_object_set_new(node, "last_seen", json_string(seen));
        json_object_set_new(node, "ephemeral",
                            json_boolean(strcmp(admin_field(r, f + 5), "1")
                                         == 0));
        json_object_set_new(node, "app_id",
                            json_string(admin_field(r, f + 6)));
        json_object_set_new(node, "instance_id",
                            json_string(admin_field(r, f + 7)));
        json_object_set_new(node, "node_key",
                            json_sprintf("nodekey:%s",
                                         admin_field(r, f + 8)));
        json_object_set_new(node, "key_expiry",
                            exp > 0 ? json_string(expires) : json_null());
        json_object_set_new(node, "expired",
                            json_boolean(exp > 0
                                         && exp <= (long long) time(NULL)));
        json_object_set_new(node, "endpoints", eps);
        json_object_set_new(node, "created_at", json_string(created));
        json_object_set_new(node, "node_type",
                            json_string(admin_field(r, f + 12)));
        json_object_set_new(node, "user",
                            json_integer(admin_number(r, f + 13)));

        json_array_append_new(all, node);
    }

    freeReplyObject(r);

    if (o->json) {
        json_dumpf(all, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(all);
    }

    return 0;
}


/* per app: what the limits count */

static int
nodes_apps(redisContext *c, const admin_opts_t *o)
{
    size_t       i, n, f;
    json_t      *all, *app;
    redisReply  *r;

    r = admin_eval(c, ngx_http_dstack_vpc_cp_lua_admin_apps, o, 0, NULL);
    if (r == NULL) {
        return 1;
    }

    if (r->type != REDIS_REPLY_ARRAY
        || r->elements % NGX_HTTP_DSTACK_VPC_CP_APP_FIELDS)
    {
        fprintf(stderr, "%s: unexpected reply from Redis\n", wgctl_prog);
        freeReplyObject(r);
        return 1;
    }

    n = r->elements / NGX_HTTP_DSTACK_VPC_CP_APP_FIELDS;

    if (!o->json) {
        printf("%-40s %7s %7s %7s %8s\n", "APP", "NODES", "ONLINE", "KEYS",
               "RECORDS");

        for (i = 0; i < n; i++) {
            f = i * NGX_HTTP_DSTACK_VPC_CP_APP_FIELDS;
            printf("%-40s %7lld %7lld %7lld %8lld\n", admin_field(r, f),
                   admin_number(r, f + 1), admin_number(r, f + 2),
                   admin_number(r, f + 3), admin_number(r, f + 4));
        }

        freeReplyObject(r);
        return 0;
    }

    all = json_array();
    if (all == NULL) {
        freeReplyObject(r);
        return 1;
    }

    for (i = 0; i < n; i++) {
        f = i * NGX_HTTP_DSTACK_VPC_CP_APP_FIELDS;

        app = json_pack("{s:s, s:I, s:I, s:I, s:I}",
                        "app_id", admin_field(r, f),
                        "nodes", (json_int_t) admin_number(r, f + 1),
                        "online", (json_int_t) admin_number(r, f + 2),
                        "pre_auth_keys", (json_int_t) admin_number(r, f + 3),
                        "records", (json_int_t) admin_number(r, f + 4));

        if (app == NULL || json_array_append_new(all, app) != 0) {
            json_decref(all);
            freeReplyObject(r);
            return 1;
        }
    }

    freeReplyObject(r);

    json_dumpf(all, stdout, JSON_INDENT(2));
    printf("\n");
    json_decref(all);

    return 0;
}


/* delete or expire one node */

static int
nodes_change(redisContext *c, const admin_opts_t *o, const char *what)
{
    int          rc;
    const char  *argv[2];
    redisReply  *r;

    argv[0] = what;
    argv[1] = o->args[1];

    r = admin_eval(c, ngx_http_dstack_vpc_cp_lua_admin_node, o, 2, argv);
    if (r == NULL) {
        return 1;
    }

    rc = 1;

    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1
        && strcmp(admin_field(r, 0), "ok") == 0)
    {
        if (o->json) {
            printf("{\"id\":%s,\"%s\":true}\n", admin_field(r, 1),
                   strcmp(what, "delete") == 0 ? "deleted" : "expired");

        } else {
            printf("node %s %s\n", admin_field(r, 1),
                   strcmp(what, "delete") == 0 ? "deleted" : "expired");
        }

        rc = 0;

    } else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1
               && strcmp(admin_field(r, 0), "unknown") == 0)
    {
        fprintf(stderr, "%s: no node \"%s\"\n", wgctl_prog, o->args[1]);

    } else {
        fprintf(stderr, "%s: unexpected reply from Redis\n", wgctl_prog);
    }

    freeReplyObject(r);

    return rc;
}


int
preauthkeys_main(int argc, char **argv)
{
    int            rc;
    redisContext  *c;
    admin_opts_t   o;

    rc = admin_options(argc, argv, &o, 1, preauthkeys_usage);
    if (rc != 0) {
        return rc > 0 ? 0 : 1;
    }

    if (o.nargs == 0
        || !(((strcmp(o.args[0], "create") == 0
               || strcmp(o.args[0], "list") == 0)
              && o.nargs == 1)
             || (strcmp(o.args[0], "expire") == 0 && o.nargs == 2)))
    {
        preauthkeys_usage(stderr);
        return 1;
    }

    c = admin_connect(&o);
    if (c == NULL) {
        return 1;
    }

    if (strcmp(o.args[0], "create") == 0) {
        rc = preauthkeys_create(c, &o);

    } else if (strcmp(o.args[0], "list") == 0) {
        rc = preauthkeys_list(c, &o);

    } else {
        rc = preauthkeys_expire(c, &o);
    }

    redisFree(c);

    return rc;
}


static int
preauthkeys_create(redisContext *c, const admin_opts_t *o)
{
    int          rc, tries;
    char         key[ADMIN_KEY_LEN + 1], id[ADMIN_KEY_ID_LEN + 1];
    char         hash[65], ttl[32], when[32];
    const char  *argv[5];
    redisReply  *r;

    snprintf(ttl, sizeof(ttl), "%ld", o->expiration);
    rc = 1;
    r = NULL;

    for (tries = 0; tries < 3; tries++) {
        memcpy(key, "hskey-auth-", sizeof("hskey-auth-") - 1);

        if (admin_key_random(key + sizeof("hskey-auth-") - 1,
                             ADMIN_KEY_ID_LEN) != 0
            || admin_key_random(key + sizeof("hskey-auth-") - 1
                                + ADMIN_KEY_ID_LEN + 1,
                                ADMIN_KEY_SECRET_LEN) != 0)
        {
            fprintf(stderr, "%s: no random bytes for a key\n", wgctl_prog);
            goto done;
        }

        key[sizeof("hskey-auth-") - 1 + ADMIN_KEY_ID_LEN] = '-';
        key[ADMIN_KEY_LEN] = '\0';

        memcpy(id, key + sizeof("hskey-auth-") - 1, ADMIN_KEY_ID_LEN);
        id[ADMIN_KEY_ID_LEN] = '\0';

        if (admin_sha256_hex(hash, key, ADMIN_KEY_LEN) != 0) {
            fprintf(stderr, "%s: cannot hash the key\n", wgctl_prog);
            goto done;
        }

        argv[0] = id;
        argv[1] = hash;
        argv[2] = ttl;
        argv[3] = o->reusable ? "1" : "0";
        argv[4] = o->ephemeral ? "1" : "0";

        r = admin_eval(c, ngx_http_dstack_vpc_cp_lua_admin_key_create, o, 5,
                       argv);

        if (r == NULL) {
            goto done;
        }

        if (r->type == REDIS_REPLY_ARRAY
            && strcmp(admin_field(r, 0), "retry") == 0)
        {
            freeReplyObject(r);
            r = NULL;
            continue;
        }

        break;
    }

    if (r == NULL || r->type != REDIS_REPLY_ARRAY
        || strcmp(admin_field(r, 0), "ok") != 0)
    {
        fprintf(stderr, "%s: the key was not created\n", wgctl_prog);
        goto done;
    }

    admin_time(when, sizeof(when), admin_number(r, 1));

    if (o->json) {
        printf("{\"key\":\"%s\",\"id\":\"%s\",\"expiration\":\"%s\","
               "\"reusable\":%s,\"ephemeral\":%s}\n", key, id, when,
               o->reusable ? "true" : "false",
               o->ephemeral ? "true" : "false");

    } else {
        printf("%s\n", key);
    }

    fflush(stdout);
    rc = 0;

done:

    OPENSSL_cleanse(key, sizeof(key));
    freeReplyObject(r);

    return rc;
}


static int
preauthkeys_list(redisContext *c, const admin_opts_t *o)
{
    char         created[32], exp[32], owner[64];
    size_t       i, n, f;
    json_t      *all, *k;
    redisReply  *r;
    long long    expiration;
    const char  *creator, *state;

    r = admin_eval(c, ngx_http_dstack_vpc_cp_lua_admin_keys, o, 0, NULL);
    if (r == NULL) {
        return 1;
    }

    if (r->type != REDIS_REPLY_ARRAY
        || r->elements % NGX_HTTP_DSTACK_VPC_CP_KEY_FIELDS)
    {
        fprintf(stderr, "%s: unexpected reply from Redis\n", wgctl_prog);
        freeReplyObject(r);
        return 1;
    }

    n = r->elements / NGX_HTTP_DSTACK_VPC_CP_KEY_FIELDS;
    all = o->json ? json_array() : NULL;

    if (!o->json) {
        printf("%-12s %-8s %-9s %-5s %-8s %-20s %-7s %s\n", "ID", "REUSABLE",
               "EPHEMERAL", "USED", "STATE", "EXPIRES", "CREATOR",
               "APP / NODE");
    }

    for (i = 0; i < n; i++) {
        f = i * NGX_HTTP_DSTACK_VPC_CP_KEY_FIELDS;

        expiration = admin_number(r, f + 2);
        admin_time(created, sizeof(created), admin_number(r, f + 1));
        admin_time(exp, sizeof(exp), expiration);

        creator = admin_field(r, f + 10)[0] ? admin_field(r, f + 10) : "api";

        state = strcmp(admin_field(r, f + 6), "1") == 0 ? "revoked"
                : expiration <= (long long) time(NULL) ? "expired"
                : (strcmp(admin_field(r, f + 5), "1") == 0
                   && strcmp(admin_field(r, f + 3), "1") != 0) ? "used"
                : "valid";

        if (!o->json) {
            snprintf(owner, sizeof(owner), "%.12s %s",
                     admin_field(r, f + 7)[0] ? admin_field(r, f + 7) : "-",
                     admin_field(r, f + 9));

            printf("%-12s %-8s %-9s %-5s %-8s %-20s %-7s %s\n",
                   admin_field(r, f),
                   strcmp(admin_field(r, f + 3), "1") == 0 ? "yes" : "no",
                   strcmp(admin_field(r, f + 4), "1") == 0 ? "yes" : "no",
                   strcmp(admin_field(r, f + 5), "1") == 0 ? "yes" : "no",
                   state, exp, creator, owner);
            continue;
        }

        k = json_object();

        if (k == NULL || all == NULL) {
            json_decref(all);
            freeReplyObject(r);
            return 1;
        }

        json_object_set_new(k, "id", json_string(admin_field(r, f)));
        json_object_set_new(k, "created_at", json_string(created));
        json_object_set_new(k, "expiration", json_string(exp));
        json_object_set_new(k, "reusable",
                            json_boolean(strcmp(admin_field(r, f + 3), "1")
                                         == 0));
        json_object_set_new(k, "ephemeral",
                            json_boolean(strcmp(admin_field(r, f + 4), "1")
                                         == 0));
        json_object_set_new(k, "used",
                            json_boolean(strcmp(admin_field(r, f + 5), "1")
                                         == 0));
        json_object_set_new(k, "uses", json_integer(admin_number(r, f + 11)));
        json_object_set_new(k, "state", json_string(state));
        json_object_set_new(k, "app_id", json_string(admin_field(r, f + 7)));
        json_object_set_new(k, "instance_id",
                            json_string(admin_field(r, f + 8)));
        json_object_set_new(k, "node_name",
                            json_string(admin_field(r, f + 9)));
        json_object_set_new(k, "creator", json_string(creator));

        json_array_append_new(all, k);
    }

    freeReplyObject(r);

    if (o->json) {
        json_dumpf(all, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(all);
    }

    return 0;
}


/* by id, or by the whole key (whose id is its first part) */

static int
preauthkeys_expire(redisContext *c, const admin_opts_t *o)
{
    int          rc;
    char         id[ADMIN_KEY_ID_LEN + 1];
    size_t       i;
    const char  *arg, *argv[1];
    redisReply  *r;

    arg = o->args[1];

    if (strncmp(arg, "hskey-auth-", sizeof("hskey-auth-") - 1) == 0) {
        arg += sizeof("hskey-auth-") - 1;
    }

    for (i = 0; i < ADMIN_KEY_ID_LEN; i++) {
        if (!((arg[i] >= '0' && arg[i] <= '9') || (arg[i] >= 'a'
              && arg[i] <= 'z') || (arg[i] >= 'A' && arg[i] <= 'Z')))
        {
            break;
        }

        id[i] = arg[i];
    }

    id[i] = '\0';

    if (i != ADMIN_KEY_ID_LEN || (arg[i] != '\0' && arg[i] != '-')) {
        fprintf(stderr, "%s: invalid key id \"%.24s\"\n", wgctl_prog, id);
        return 1;
    }

    argv[0] = id;

    r = admin_eval(c, ngx_http_dstack_vpc_cp_lua_admin_key_expire, o, 1,
                   argv);
    if (r == NULL) {
        return 1;
    }

    rc = 1;

    if (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING) {
        if (strcmp(r->str, "ok") == 0) {
            printf("key %s expired\n", id);
            rc = 0;

        } else {
            fprintf(stderr, "%s: no key \"%s\"\n", wgctl_prog, id);
        }

    } else {
        fprintf(stderr, "%s: unexpected reply from Redis\n", wgctl_prog);
    }

    freeReplyObject(r);

    return rc;
}
