/*
 * libFuzzer target for the certificate-level RA-TLS parsers: the dstack
 * extensions 1.3.6.1.4.1.62397.1.<arc> inside an X.509 certificate
 * (ratls/dstack_ratls.c: `.3` app_id, `.4` usage, the issuer's `.3`) and
 * the attestation they carry (dstack_attest_parse_cert: `.8`, `.9`, the
 * legacy `.1` quote and `.2` event log), then the checks that run on what
 * parses (no root, no collateral: no I/O).
 *
 * Two input forms (seeds in fuzz/corpus/ratls-cert, fuzz/make-corpus):
 *   - a DER certificate (first byte 0x30), as nginx gets it from a peer;
 *   - records of arc (1 byte), length (2 bytes, big endian) and the
 *     extension's payload, added to a certificate built here, so that
 *     mutations that change lengths reach our parser rather than stopping
 *     at OpenSSL's DER decoder.  The payload is wrapped in the inner DER
 *     OCTET STRING here, unless the arc byte has its top bit set: then it
 *     is the extnValue content as is.  A length beyond the input is cut
 *     to what is left, and fewer than 3 bytes after a record join it.
 */

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "dstack_attest.h"
#include "dstack_ratls.h"


int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static X509 *ratls_cert_fuzz_build(const uint8_t *data, size_t size);
static void ratls_cert_fuzz_parse(X509 *x);


static EVP_PKEY  *ratls_cert_fuzz_key;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ratls_cert_fuzz_key = EVP_EC_gen("P-256");

    return ratls_cert_fuzz_key != NULL ? 0 : -1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    X509                 *x;
    const unsigned char  *p;

    if (size > 0 && data[0] == 0x30) {
        p = data;
        x = d2i_X509(NULL, &p, (long) size);

    } else {
        x = ratls_cert_fuzz_build(data, size);
    }

    if (x != NULL) {
        ratls_cert_fuzz_parse(x);
        X509_free(x);
    }

    ERR_clear_error();

    return 0;
}


static X509 *
ratls_cert_fuzz_build(const uint8_t *data, size_t size)
{
    int                 n;
    char                oid[64];
    size_t              len;
    unsigned char      *wrapped;
    X509               *x;
    X509_NAME          *name;
    ASN1_OBJECT        *obj;
    X509_EXTENSION     *ext;
    ASN1_OCTET_STRING  *os;

    x = X509_new();

    if (x == NULL) {
        return NULL;
    }

    name = X509_get_subject_name(x);

    if (X509_set_version(x, X509_VERSION_3) != 1
        || ASN1_INTEGER_set(X509_get_serialNumber(x), 1) != 1
        || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                      (const unsigned char *) "fuzz", -1,
                                      -1, 0) != 1
        || X509_set_issuer_name(x, name) != 1
        || X509_set_pubkey(x, ratls_cert_fuzz_key) != 1)
    {
        goto failed;
    }

    while (size >= 3) {
        len = (size_t) data[1] << 8 | data[2];

        if (len > size - 3 || size - 3 - len < 3) {
            len = size - 3;
        }

        snprintf(oid, sizeof(oid), "1.3.6.1.4.1.62397.1.%u", data[0] & 0x7f);

        obj = OBJ_txt2obj(oid, 1);
        os = ASN1_OCTET_STRING_new();
        ext = NULL;

        if (obj != NULL && os != NULL
            && ASN1_OCTET_STRING_set(os, data + 3, (int) len) == 1)
        {
            if (!(data[0] & 0x80)) {
                /* the inner OCTET STRING: its DER becomes the extnValue */
                wrapped = NULL;
                n = i2d_ASN1_OCTET_STRING(os, &wrapped);

                if (n <= 0 || ASN1_OCTET_STRING_set(os, wrapped, n) != 1) {
                    OPENSSL_free(wrapped);
                    ASN1_OBJECT_free(obj);
                    ASN1_OCTET_STRING_free(os);
                    goto failed;
                }

                OPENSSL_free(wrapped);
            }

            ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
        }

        ASN1_OBJECT_free(obj);
        ASN1_OCTET_STRING_free(os);

        if (ext == NULL || X509_add_ext(x, ext, -1) != 1) {
            X509_EXTENSION_free(ext);
            goto failed;
        }

        X509_EXTENSION_free(ext);

        data += 3 + len;
        size -= 3 + len;
    }

    return x;

failed:

    X509_free(x);

    return NULL;
}


static void
ratls_cert_fuzz_parse(X509 *x)
{
    char                     usage[DSTACK_USAGE_MAX_LEN + 1];
    char                     hex[DSTACK_APP_ID_HEX_LEN];
    size_t                   len;
    unsigned                 arc;
    const char              *err;
    const unsigned char     *payload;
    unsigned char            app_id[DSTACK_APP_ID_LEN];
    dstack_attest_t          att;
    dstack_attest_opts_t     opts;
    dstack_attest_result_t   res;

    for (arc = 0; arc <= 10; arc++) {
        (void) dstack_ratls_get_ext(x, arc, &payload, &len);
    }

    if (dstack_ratls_app_id(x, app_id) == DSTACK_RATLS_OK) {
        (void) dstack_hex_encode(hex, app_id, sizeof(app_id));
        (void) dstack_hex_decode(app_id, sizeof(app_id), hex, sizeof(hex));
    }

    (void) dstack_ratls_usage(x, usage);
    (void) dstack_ratls_check_issuer(x, x);

    memset(&opts, 0, sizeof(opts));
    opts.now = 1751328000;

    dstack_attest_init(&att);

    if (dstack_attest_parse_cert(x, &att, &err) == 0) {
        (void) dstack_attest_verify(&att, &opts, &res);
    }

    dstack_attest_free(&att);
}
