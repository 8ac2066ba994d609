/*
 * Certificate minting for dstack-sim: the KMS root, the App CA (or the
 * local CA of the no-kms profile) kept in the state directory, and the
 * leaves with dstack's extensions, including the deliberately malformed
 * app_id encodings that negative tests need.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "sim.h"


#define SIM_HOUR      3600
#define SIM_YEAR      (365L * 24 * SIM_HOUR)
#define SIM_ORG       "dstack-sim"


static void sim_ssl_error(const char *what);
static X509 *sim_cert_new(EVP_PKEY *key, const char *org, const char *cn,
    X509 *issuer, time_t not_before, time_t not_after);
static int sim_cert_add_v3(X509 *x, X509 *issuer, int nid,
    const char *value);
static int sim_cert_add_san(X509 *x, const char **names, size_t n);
static int sim_cert_add_app_id(X509 *x, const sim_leaf_t *lf);
static size_t sim_der_len(u_char *p, size_t len);
static int sim_ca_get(const char *dir, const char *name, sim_ca_t *issuer,
    const char *cn, const char *bc, const u_char *app_id, sim_ca_t *ca);
static int sim_ca_create(sim_ca_t *ca, sim_ca_t *issuer, const char *cn,
    const char *bc, const u_char *app_id);
static int sim_ca_load(const char *dir, const char *name, sim_ca_t *ca);
static void sim_ca_free(sim_ca_t *ca);
static int sim_state_path(char *buf, size_t size, const char *dir,
    const char *name, const char *ext);
static int sim_state_lock(const char *dir);
static char *sim_pem_string(EVP_PKEY *key, X509 *x);


int
sim_ctx_init(sim_ctx_t *ctx)
{
    int   fd, rc;
    char  hex[2 * SIM_ID_LEN + 1], name[64];

    fd = sim_state_lock(ctx->state_dir);
    if (fd == -1) {
        return -1;
    }

    if (ctx->kms) {
        rc = sim_ca_get(ctx->state_dir, "root", NULL, "Dstack KMS CA",
                        "critical,CA:TRUE", NULL, &ctx->root);
        if (rc == 0) {
            *dstack_hex_encode(hex, ctx->app_id, SIM_ID_LEN) = '\0';
            snprintf(name, sizeof(name), "app-%s", hex);
            rc = sim_ca_get(ctx->state_dir, name, &ctx->root,
                            "Dstack App CA", "critical,CA:TRUE,pathlen:0",
                            ctx->app_id, &ctx->ca);
        }

    } else {
        *dstack_hex_encode(hex, ctx->instance_id, SIM_ID_LEN) = '\0';
        snprintf(name, sizeof(name), "local-%s", hex);
        rc = sim_ca_get(ctx->state_dir, name, NULL, "Dstack Local CA",
                        "critical,CA:TRUE,pathlen:0", NULL, &ctx->ca);
    }

    close(fd);

    if (rc != 0) {
        sim_ctx_free(ctx);
    }

    return rc;
}


void
sim_ctx_free(sim_ctx_t *ctx)
{
    sim_ca_free(&ctx->root);
    sim_ca_free(&ctx->ca);

    free(ctx->quote_template);
    ctx->quote_template = NULL;
}


int
sim_root_path(const char *dir, char *path, size_t size)
{
    int       fd, rc;
    sim_ca_t  root;

    fd = sim_state_lock(dir);
    if (fd == -1) {
        return -1;
    }

    memset(&root, 0, sizeof(sim_ca_t));
    rc = sim_ca_get(dir, "root", NULL, "Dstack KMS CA", "critical,CA:TRUE",
                    NULL, &root);
    sim_ca_free(&root);
    close(fd);

    if (rc != 0) {
        return -1;
    }

    return sim_state_path(path, size, dir, "root", "crt");
}


int
sim_issue(sim_ctx_t *ctx, const sim_leaf_t *lf, sim_pem_t *pem)
{
    X509      *x;
    EVP_PKEY  *key;

    memset(pem, 0, sizeof(sim_pem_t));

    if (sim_cert_leaf(lf, &ctx->ca, &key, &x) != 0) {
        return -1;
    }

    pem->key = sim_pem_string(key, NULL);
    pem->chain[pem->nchain++] = sim_pem_string(NULL, x);
    pem->chain[pem->nchain++] = sim_pem_string(NULL, ctx->ca.cert);

    if (ctx->kms) {
        pem->chain[pem->nchain++] = sim_pem_string(NULL, ctx->root.cert);
    }

    X509_free(x);
    EVP_PKEY_free(key);

    if (pem->key == NULL || pem->chain[0] == NULL || pem->chain[1] == NULL
        || (ctx->kms && pem->chain[2] == NULL))
    {
        sim_pem_free(pem);
        return -1;
    }

    return 0;
}


void
sim_pem_free(sim_pem_t *pem)
{
    size_t  i;

    if (pem->key != NULL) {
        OPENSSL_cleanse(pem->key, strlen(pem->key));
        free(pem->key);
        pem->key = NULL;
    }

    for (i = 0; i < SIM_CHAIN_MAX; i++) {
        free(pem->chain[i]);
        pem->chain[i] = NULL;
    }

    pem->nchain = 0;
}


int
sim_cert_leaf(const sim_leaf_t *lf, sim_ca_t *issuer, EVP_PKEY **pkey,
    X509 **pcert)
{
    int          len;
    X509        *x;
    u_char      *spki;
    EVP_PKEY    *key;
    const char  *eku;

    x = NULL;
    spki = NULL;

    key = EVP_EC_gen("P-256");
    if (key == NULL) {
        sim_ssl_error("leaf key generation");
        return -1;
    }

    x = sim_cert_new(key, NULL, lf->subject, issuer->cert, lf->not_before,
                     lf->not_after);
    if (x == NULL) {
        goto failed;
    }

    if (lf->server_auth == lf->client_auth) {
        eku = "serverAuth,clientAuth";

    } else {
        eku = lf->server_auth ? "serverAuth" : "clientAuth";
    }

    if (sim_cert_add_v3(x, issuer->cert, NID_basic_constraints,
                        "critical,CA:FALSE") != 0
        || sim_cert_add_v3(x, issuer->cert, NID_key_usage,
                           "critical,digitalSignature") != 0
        || sim_cert_add_v3(x, issuer->cert, NID_ext_key_usage, eku) != 0
        || sim_cert_add_v3(x, issuer->cert, NID_subject_key_identifier,
                           "hash") != 0
        || sim_cert_add_v3(x, issuer->cert, NID_authority_key_identifier,
                           "keyid:always") != 0
        || sim_cert_add_san(x, lf->alt_names, lf->nalt_names) != 0
        || sim_cert_add_app_id(x, lf) != 0
        || sim_cert_add_wrapped(x, SIM_EXT_USAGE, (u_char *) "app:custom",
                                sizeof("app:custom") - 1) != 0)
    {
        goto failed;
    }

    if (lf->hook != NULL) {
        len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki);
        if (len <= 0) {
            sim_ssl_error("leaf SubjectPublicKeyInfo encoding");
            goto failed;
        }

        if (lf->hook(x, spki, len, lf->hook_data) != 0) {
            sim_log("leaf extension hook failed");
            goto failed;
        }
    }

    if (X509_sign(x, issuer->key, EVP_sha256()) == 0) {
        sim_ssl_error("leaf signature");
        goto failed;
    }

    OPENSSL_free(spki);

    *pkey = key;
    *pcert = x;

    return 0;

failed:

    OPENSSL_free(spki);
    X509_free(x);
    EVP_PKEY_free(key);

    return -1;
}


/*
 * Adds a non-critical extension 1.3.6.1.4.1.62397.1.<suffix> whose
 * extnValue OCTET STRING holds "content" as is: the caller chooses every
 * byte, which is how the malformed app_id variants are made.
 */

int
sim_cert_add_ext(X509 *x, int suffix, const u_char *content, size_t len)
{
    int                 rc;
    char                oid[64];
    ASN1_OBJECT        *obj;
    X509_EXTENSION     *ext;
    ASN1_OCTET_STRING  *os;

    rc = -1;
    ext = NULL;

    snprintf(oid, sizeof(oid), "%s.%d", SIM_OID_ARC, suffix);

    obj = OBJ_txt2obj(oid, 1);
    os = ASN1_OCTET_STRING_new();

    if (obj == NULL || os == NULL
        || !ASN1_OCTET_STRING_set(os, content, (int) len))
    {
        goto done;
    }

    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
    if (ext == NULL || !X509_add_ext(x, ext, -1)) {
        goto done;
    }

    rc = 0;

done:

    if (rc != 0) {
        sim_ssl_error("extension encoding");
    }

    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(obj);

    return rc;
}


/* the usual dstack form: extnValue holds a DER OCTET STRING of payload */

int
sim_cert_add_wrapped(X509 *x, int suffix, const u_char *payload, size_t len)
{
    int      rc;
    size_t   n;
    u_char  *buf;

    buf = malloc(len + 6);
    if (buf == NULL) {
        return -1;
    }

    buf[0] = 0x04;
    n = 1 + sim_der_len(buf + 1, len);
    memcpy(buf + n, payload, len);

    rc = sim_cert_add_ext(x, suffix, buf, n + len);

    free(buf);

    return rc;
}


/*
 * The app_id extension and its variants; "payload" is the app id, the
 * bytes listed are the extnValue contents:
 *   normal, dup     04 14 <id>            (dup: the extension twice)
 *   len N           04 N  <id, cut or zero-padded to N bytes>
 *   wrap single     <id>
 *   trailing        04 14 <id> 05 00
 *   utf8            0c 14 <id>
 *   raw             the given bytes
 */

static int
sim_cert_add_app_id(X509 *x, const sim_leaf_t *lf)
{
    int      rc;
    u_char  *p, buf[SIM_ID_LEN + 4];

    if (lf->app_id == NULL) {
        return 0;
    }

    switch (lf->variant) {

    case SIM_APP_ID_NONE:
        return 0;

    case SIM_APP_ID_LEN:
        p = calloc(1, lf->variant_len + 1);
        if (p == NULL) {
            return -1;
        }

        memcpy(p, lf->app_id,
               lf->variant_len < SIM_ID_LEN ? lf->variant_len : SIM_ID_LEN);
        rc = sim_cert_add_wrapped(x, SIM_EXT_APP_ID, p, lf->variant_len);
        free(p);
        return rc;

    case SIM_APP_ID_WRAP_SINGLE:
        return sim_cert_add_ext(x, SIM_EXT_APP_ID, lf->app_id, SIM_ID_LEN);

    case SIM_APP_ID_TRAILING:
        buf[0] = 0x04;
        buf[1] = SIM_ID_LEN;
        memcpy(buf + 2, lf->app_id, SIM_ID_LEN);
        buf[SIM_ID_LEN + 2] = 0x05;
        buf[SIM_ID_LEN + 3] = 0x00;
        return sim_cert_add_ext(x, SIM_EXT_APP_ID, buf, SIM_ID_LEN + 4);

    case SIM_APP_ID_UTF8:
        buf[0] = 0x0c;
        buf[1] = SIM_ID_LEN;
        memcpy(buf + 2, lf->app_id, SIM_ID_LEN);
        return sim_cert_add_ext(x, SIM_EXT_APP_ID, buf, SIM_ID_LEN + 2);

    case SIM_APP_ID_RAW:
        return sim_cert_add_ext(x, SIM_EXT_APP_ID, lf->raw, lf->raw_len);

    case SIM_APP_ID_DUP:
        if (sim_cert_add_wrapped(x, SIM_EXT_APP_ID, lf->app_id, SIM_ID_LEN)
            != 0)
        {
            return -1;
        }

        /* fall through */

    default:
        return sim_cert_add_wrapped(x, SIM_EXT_APP_ID, lf->app_id,
                                    SIM_ID_LEN);
    }
}


static size_t
sim_der_len(u_char *p, size_t len)
{
    size_t  i, n, v;

    if (len < 0x80) {
        p[0] = (u_char) len;
        return 1;
    }

    for (n = 0, v = len; v != 0; v >>= 8) {
        n++;
    }

    p[0] = (u_char) (0x80 | n);

    for (i = n; i > 0; i--) {
        p[i] = (u_char) (len & 0xff);
        len >>= 8;
    }

    return n + 1;
}


static X509 *
sim_cert_new(EVP_PKEY *key, const char *org, const char *cn, X509 *issuer,
    time_t not_before, time_t not_after)
{
    X509       *x;
    BIGNUM     *bn;
    X509_NAME  *name;

    x = X509_new();
    bn = BN_new();
    name = X509_NAME_new();

    if (x == NULL || bn == NULL || name == NULL) {
        goto failed;
    }

    /*
     * V_ASN1_UTF8STRING rather than MBSTRING_UTF8: the latter enforces
     * the 64-character bound of commonName, and dstack accepts longer
     * subjects
     */

    if ((org != NULL
         && !X509_NAME_add_entry_by_txt(name, "O", V_ASN1_UTF8STRING,
                                        (u_char *) org, -1, -1, 0))
        || !X509_NAME_add_entry_by_txt(name, "CN", V_ASN1_UTF8STRING,
                                       (u_char *) cn, -1, -1, 0))
    {
        goto failed;
    }

    if (!X509_set_version(x, X509_VERSION_3)
        || !BN_rand(bn, 127, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY)
        || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL
        || !X509_set_subject_name(x, name)
        || !X509_set_issuer_name(x, issuer != NULL
                                    ? X509_get_subject_name(issuer) : name)
        || ASN1_TIME_set(X509_getm_notBefore(x), not_before) == NULL
        || ASN1_TIME_set(X509_getm_notAfter(x), not_after) == NULL
        || !X509_set_pubkey(x, key))
    {
        goto failed;
    }

    BN_free(bn);
    X509_NAME_free(name);

    return x;

failed:

    sim_ssl_error("certificate creation");

    BN_free(bn);
    X509_NAME_free(name);
    X509_free(x);

    return NULL;
}


/* only for fixed values: X509V3_EXT_conf_nid parses a config string */

static int
sim_cert_add_v3(X509 *x, X509 *issuer, int nid, const char *value)
{
    int              rc;
    X509V3_CTX       v3;
    X509_EXTENSION  *ext;

    X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);

    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL) {
        sim_ssl_error(value);
        return -1;
    }

    rc = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);

    if (rc == 0) {
        sim_ssl_error(value);
        return -1;
    }

    return 0;
}


/* built by hand so that no client string ever reaches a config parser */

static int
sim_cert_add_san(X509 *x, const char **names, size_t n)
{
    int                 rc, len;
    size_t              i;
    u_char              ip[16];
    GENERAL_NAME       *gen;
    GENERAL_NAMES      *gens;
    ASN1_IA5STRING     *ia5;
    ASN1_OCTET_STRING  *os;

    if (n == 0) {
        return 0;
    }

    rc = -1;

    gens = GENERAL_NAMES_new();
    if (gens == NULL) {
        goto done;
    }

    for (i = 0; i < n; i++) {
        gen = GENERAL_NAME_new();
        if (gen == NULL) {
            goto done;
        }

        len = 0;

        if (inet_pton(AF_INET, names[i], ip) == 1) {
            len = 4;

        } else if (inet_pton(AF_INET6, names[i], ip) == 1) {
            len = 16;
        }

        if (len != 0) {
            os = ASN1_OCTET_STRING_new();
            if (os == NULL || !ASN1_OCTET_STRING_set(os, ip, len)) {
                ASN1_OCTET_STRING_free(os);
                GENERAL_NAME_free(gen);
                goto done;
            }

            GENERAL_NAME_set0_value(gen, GEN_IPADD, os);

        } else {
            ia5 = ASN1_IA5STRING_new();
            if (ia5 == NULL || !ASN1_STRING_set(ia5, names[i], -1)) {
                ASN1_IA5STRING_free(ia5);
                GENERAL_NAME_free(gen);
                goto done;
            }

            GENERAL_NAME_set0_value(gen, GEN_DNS, ia5);
        }

        if (!sk_GENERAL_NAME_push(gens, gen)) {
            GENERAL_NAME_free(gen);
            goto done;
        }
    }

    if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0,
                          X509V3_ADD_APPEND) == 1)
    {
        rc = 0;
    }

done:

    if (rc != 0) {
        sim_ssl_error("subjectAltName");
    }

    GENERAL_NAMES_free(gens);

    return rc;
}


/*
 * Loads the CA "name" from the state directory, creating it when absent
 * or when it is not signed by "issuer" (a root made anew); the caller
 * holds the state lock, which is what makes simulators started together
 * on one directory end up with one root.
 */

static int
sim_ca_get(const char *dir, const char *name, sim_ca_t *issuer,
    const char *cn, const char *bc, const u_char *app_id, sim_ca_t *ca)
{
    int    rc;
    char  *pem, path[4096];

    rc = sim_ca_load(dir, name, ca);
    if (rc == -1) {
        return -1;
    }

    if (rc == 0) {
        if (issuer == NULL || X509_verify(ca->cert, issuer->key) == 1) {
            return 0;
        }

        ERR_clear_error();
        sim_ca_free(ca);
    }

    if (sim_ca_create(ca, issuer, cn, bc, app_id) != 0) {
        return -1;
    }

    /* the key first: a certificate on disk implies its key is there */

    rc = -1;

    pem = sim_pem_string(ca->key, NULL);
    if (pem != NULL
        && sim_state_path(path, sizeof(path), dir, name, "key") == 0)
    {
        rc = sim_write_file(path, pem, strlen(pem), 0600);
    }

    if (pem != NULL) {
        OPENSSL_cleanse(pem, strlen(pem));
        free(pem);
    }

    if (rc == 0) {
        rc = -1;

        pem = sim_pem_string(NULL, ca->cert);
        if (pem != NULL
            && sim_state_path(path, sizeof(path), dir, name, "crt") == 0)
        {
            rc = sim_write_file(path, pem, strlen(pem), 0644);
        }

        free(pem);
    }

    if (rc != 0) {
        sim_ca_free(ca);
    }

    return rc;
}


static int
sim_ca_create(sim_ca_t *ca, sim_ca_t *issuer, const char *cn,
    const char *bc, const u_char *app_id)
{
    X509      *ic;
    time_t     now;
    EVP_PKEY  *sk;

    ca->key = EVP_EC_gen("P-256");
    if (ca->key == NULL) {
        sim_ssl_error("CA key generation");
        return -1;
    }

    now = time(NULL);
    ic = issuer != NULL ? issuer->cert : NULL;
    sk = issuer != NULL ? issuer->key : ca->key;

    ca->cert = sim_cert_new(ca->key, SIM_ORG, cn, ic, now - SIM_HOUR,
                            now + 10 * SIM_YEAR);
    if (ca->cert == NULL) {
        goto failed;
    }

    if (sim_cert_add_v3(ca->cert, ic, NID_basic_constraints, bc) != 0
        || sim_cert_add_v3(ca->cert, ic, NID_key_usage,
                           "critical,keyCertSign,cRLSign,digitalSignature")
           != 0
        || sim_cert_add_v3(ca->cert, ic, NID_subject_key_identifier, "hash")
           != 0
        || (ic != NULL
            && sim_cert_add_v3(ca->cert, ic, NID_authority_key_identifier,
                               "keyid:always") != 0)
        || (app_id != NULL
            && sim_cert_add_wrapped(ca->cert, SIM_EXT_APP_ID, app_id,
                                    SIM_ID_LEN) != 0)
        || (ic != NULL
            && sim_cert_add_wrapped(ca->cert, SIM_EXT_USAGE,
                                    (u_char *) "app:ca",
                                    sizeof("app:ca") - 1) != 0))
    {
        goto failed;
    }

    if (X509_sign(ca->cert, sk, EVP_sha256()) == 0) {
        sim_ssl_error("CA signature");
        goto failed;
    }

    return 0;

failed:

    sim_ca_free(ca);

    return -1;
}


/* 0: loaded, 1: absent, -1: error */

static int
sim_ca_load(const char *dir, const char *name, sim_ca_t *ca)
{
    FILE  *f;
    char   path[4096];

    if (sim_state_path(path, sizeof(path), dir, name, "crt") != 0) {
        return -1;
    }

    f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT) {
            return 1;
        }

        sim_log("cannot open \"%s\": %s", path, strerror(errno));
        return -1;
    }

    ca->cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);

    if (sim_state_path(path, sizeof(path), dir, name, "key") != 0) {
        goto failed;
    }

    f = fopen(path, "re");
    if (f == NULL) {
        sim_log("cannot open \"%s\": %s", path, strerror(errno));
        goto failed;
    }

    ca->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);

    if (ca->cert == NULL || ca->key == NULL
        || X509_check_private_key(ca->cert, ca->key) != 1)
    {
        sim_ssl_error(name);
        sim_log("bad CA \"%s\" in \"%s\"", name, dir);
        goto failed;
    }

    return 0;

failed:

    sim_ca_free(ca);

    return -1;
}


static void
sim_ca_free(sim_ca_t *ca)
{
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    ca->cert = NULL;
    ca->key = NULL;
}


static int
sim_state_path(char *buf, size_t size, const char *dir, const char *name,
    const char *ext)
{
    int  n;

    n = snprintf(buf, size, "%s/%s.%s", dir, name, ext);
    if (n < 0 || (size_t) n >= size) {
        sim_log("state path too long: \"%s\"", dir);
        return -1;
    }

    return 0;
}


static int
sim_state_lock(const char *dir)
{
    int   fd;
    char  path[4096];

    if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
        sim_log("cannot create \"%s\": %s", dir, strerror(errno));
        return -1;
    }

    if (sim_state_path(path, sizeof(path), dir, "", "lock") != 0) {
        return -1;
    }

    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1) {
        sim_log("cannot open \"%s\": %s", path, strerror(errno));
        return -1;
    }

    while (flock(fd, LOCK_EX) == -1) {
        if (errno != EINTR) {
            sim_log("cannot lock \"%s\": %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }

    return fd;
}


/* a key (as PKCS#8) when "key" is given, otherwise the certificate */

static char *
sim_pem_string(EVP_PKEY *key, X509 *x)
{
    int    ok;
    BIO   *bio;
    char  *s, *data;
    long   len;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL) {
        return NULL;
    }

    if (key != NULL) {
        ok = PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);

    } else {
        ok = PEM_write_bio_X509(bio, x);
    }

    s = NULL;
    len = BIO_get_mem_data(bio, &data);

    if (ok && len > 0) {
        s = malloc(len + 1);
        if (s != NULL) {
            memcpy(s, data, len);
            s[len] = '\0';
        }
    }

    /* a memory BIO clears its buffer when freed */
    BIO_free(bio);

    if (s == NULL) {
        sim_ssl_error("PEM encoding");
    }

    return s;
}


/* written to a temporary file first, so that readers never see a part */

int
sim_write_file(const char *path, const char *data, size_t len, mode_t mode)
{
    int      fd;
    char     tmp[4096];
    size_t   done;
    ssize_t  n;

    if ((size_t) snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path)
        >= sizeof(tmp))
    {
        sim_log("path too long: \"%s\"", path);
        return -1;
    }

    fd = mkstemp(tmp);
    if (fd == -1) {
        sim_log("cannot create \"%s\": %s", tmp, strerror(errno));
        return -1;
    }

    if (fchmod(fd, mode) == -1) {
        goto failed;
    }

    for (done = 0; done < len; done += n) {
        n = write(fd, data + done, len - done);
        if (n == -1) {
            if (errno == EINTR) {
                n = 0;
                continue;
            }

            goto failed;
        }
    }

    if (close(fd) == -1) {
        fd = -1;
        goto failed;
    }

    if (rename(tmp, path) == -1) {
        sim_log("cannot rename \"%s\": %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }

    return 0;

failed:

    sim_log("cannot write \"%s\": %s", tmp, strerror(errno));

    if (fd != -1) {
        close(fd);
    }

    unlink(tmp);

    return -1;
}


/* OpenSSL's reason strings carry no key material */

static void
sim_ssl_error(const char *what)
{
    char           buf[256];
    unsigned long  e;

    e = ERR_peek_last_error();

    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        sim_log("%s failed: %s", what, buf);

    } else {
        sim_log("%s failed", what);
    }

    ERR_clear_error();
}
