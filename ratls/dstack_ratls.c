/*
 * RA-TLS certificate identity extensions (see dstack_ratls.h).
 */

#include <string.h>
#include <openssl/objects.h>

#include "dstack_ratls.h"


/* DER content of the OID 1.3.6.1.4.1.62397.1, the arc comes last */
static const unsigned char  dstack_ratls_arc[] = {
    0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xe7, 0x3d, 0x01
};


static int
dstack_ratls_is_oid(const ASN1_OBJECT *obj, unsigned arc)
{
    size_t                len;
    const unsigned char  *data;

    len = OBJ_length(obj);
    data = OBJ_get0_data(obj);

    return data != NULL
           && arc < 0x80
           && len == sizeof(dstack_ratls_arc) + 1
           && memcmp(data, dstack_ratls_arc, sizeof(dstack_ratls_arc)) == 0
           && data[sizeof(dstack_ratls_arc)] == arc;
}


/*
 * Unwraps one DER OCTET STRING that must span the whole input, with a
 * minimally encoded definite length.
 */
static dstack_ratls_rc_e
dstack_ratls_unwrap(const unsigned char *p, size_t n,
    const unsigned char **payload, size_t *len)
{
    size_t  i, l, nlen;

    if (n < 2 || p[0] != 0x04) {
        return DSTACK_RATLS_MALFORMED;
    }

    if (p[1] < 0x80) {
        l = p[1];
        i = 2;

    } else {
        nlen = p[1] & 0x7f;

        /* lengths above 65535 are not needed and not accepted */
        if (nlen == 0 || nlen > 2 || n < 2 + nlen || p[2] == 0) {
            return DSTACK_RATLS_MALFORMED;
        }

        l = 0;

        for (i = 0; i < nlen; i++) {
            l = (l << 8) | p[2 + i];
        }

        if (l < 0x80) {
            return DSTACK_RATLS_MALFORMED;
        }

        i = 2 + nlen;
    }

    if (l != n - i) {
        return DSTACK_RATLS_MALFORMED;
    }

    *payload = p + i;
    *len = l;

    return DSTACK_RATLS_OK;
}


dstack_ratls_rc_e
dstack_ratls_get_ext(X509 *cert, unsigned arc, const unsigned char **payload,
    size_t *len)
{
    int                    i, n, found;
    X509_EXTENSION        *ext;
    ASN1_OCTET_STRING     *value;
    dstack_ratls_rc_e      rc;
    const unsigned char   *p;
    size_t                 l;

    found = 0;
    rc = DSTACK_RATLS_MISSING;

    n = X509_get_ext_count(cert);

    for (i = 0; i < n; i++) {
        ext = X509_get_ext(cert, i);

        if (ext == NULL
            || !dstack_ratls_is_oid(X509_EXTENSION_get_object(ext), arc))
        {
            continue;
        }

        if (found++) {
            return DSTACK_RATLS_DUPLICATE;
        }

        value = X509_EXTENSION_get_data(ext);

        if (value == NULL) {
            return DSTACK_RATLS_MALFORMED;
        }

        rc = dstack_ratls_unwrap(ASN1_STRING_get0_data(value),
                                 (size_t) ASN1_STRING_length(value), &p, &l);

        if (rc == DSTACK_RATLS_OK) {
            *payload = p;
            *len = l;
        }
    }

    return rc;
}


dstack_ratls_rc_e
dstack_ratls_app_id(X509 *cert, unsigned char app_id[DSTACK_APP_ID_LEN])
{
    size_t                len;
    dstack_ratls_rc_e     rc;
    const unsigned char  *p;

    rc = dstack_ratls_get_ext(cert, DSTACK_OID_APP_ID, &p, &len);

    if (rc != DSTACK_RATLS_OK) {
        return rc;
    }

    if (len != DSTACK_APP_ID_LEN) {
        return DSTACK_RATLS_BAD_LENGTH;
    }

    memcpy(app_id, p, DSTACK_APP_ID_LEN);

    return DSTACK_RATLS_OK;
}


dstack_ratls_rc_e
dstack_ratls_usage(X509 *cert, char buf[DSTACK_USAGE_MAX_LEN + 1])
{
    size_t                i, len;
    dstack_ratls_rc_e     rc;
    const unsigned char  *p;

    rc = dstack_ratls_get_ext(cert, DSTACK_OID_USAGE, &p, &len);

    if (rc != DSTACK_RATLS_OK) {
        return rc;
    }

    if (len == 0 || len > DSTACK_USAGE_MAX_LEN) {
        return DSTACK_RATLS_BAD_LENGTH;
    }

    for (i = 0; i < len; i++) {
        if (p[i] < 0x21 || p[i] > 0x7e) {
            return DSTACK_RATLS_MALFORMED;
        }

        buf[i] = (char) p[i];
    }

    buf[len] = '\0';

    return DSTACK_RATLS_OK;
}


dstack_ratls_rc_e
dstack_ratls_check_issuer(X509 *leaf, X509 *issuer)
{
    dstack_ratls_rc_e  rc;
    unsigned char      leaf_id[DSTACK_APP_ID_LEN], ca_id[DSTACK_APP_ID_LEN];

    rc = dstack_ratls_app_id(issuer, ca_id);

    if (rc == DSTACK_RATLS_MISSING) {
        return DSTACK_RATLS_OK;
    }

    if (rc != DSTACK_RATLS_OK) {
        return DSTACK_RATLS_MISMATCH;
    }

    rc = dstack_ratls_app_id(leaf, leaf_id);

    if (rc == DSTACK_RATLS_MISSING) {
        return DSTACK_RATLS_OK;
    }

    if (rc != DSTACK_RATLS_OK
        || memcmp(leaf_id, ca_id, DSTACK_APP_ID_LEN) != 0)
    {
        return DSTACK_RATLS_MISMATCH;
    }

    return DSTACK_RATLS_OK;
}


const char *
dstack_ratls_strerror(dstack_ratls_rc_e rc)
{
    switch (rc) {
    case DSTACK_RATLS_OK:
        return "ok";
    case DSTACK_RATLS_MISSING:
        return "extension missing";
    case DSTACK_RATLS_DUPLICATE:
        return "extension present twice";
    case DSTACK_RATLS_MALFORMED:
        return "extension not a single DER OCTET STRING";
    case DSTACK_RATLS_BAD_LENGTH:
        return "extension payload of wrong length";
    case DSTACK_RATLS_MISMATCH:
        return "leaf app_id differs from its issuer's";
    }

    return "unknown error";
}
