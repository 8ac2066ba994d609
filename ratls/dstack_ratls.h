/*
 * RA-TLS certificate identity: the dstack extensions under
 * 1.3.6.1.4.1.62397.1 (DESIGN section 3).  Plain C over OpenSSL 3, no
 * nginx headers, so the nginx modules and wgctl share one parser.
 *
 * Every extension value is wrapped twice: the X.509 extnValue OCTET STRING
 * holds a DER OCTET STRING whose content is the payload.  Parsing is strict:
 * one wrapping, a minimal DER length, no trailing bytes, no duplicates.
 */

#ifndef _DSTACK_RATLS_H_INCLUDED_
#define _DSTACK_RATLS_H_INCLUDED_


#include <stddef.h>
#include <openssl/x509.h>

#include "dstack_hex.h"


#pragma GCC visibility push(hidden)


#define DSTACK_APP_ID_LEN        20
#define DSTACK_APP_ID_HEX_LEN    (2 * DSTACK_APP_ID_LEN)
#define DSTACK_USAGE_MAX_LEN     64

/* the last arc of each extension's OID */
#define DSTACK_OID_QUOTE         1
#define DSTACK_OID_EVENT_LOG     2
#define DSTACK_OID_APP_ID        3
#define DSTACK_OID_USAGE         4
#define DSTACK_OID_ATTESTATION   8
#define DSTACK_OID_APP_INFO      9


typedef enum {
    DSTACK_RATLS_OK = 0,
    DSTACK_RATLS_MISSING,
    DSTACK_RATLS_DUPLICATE,
    DSTACK_RATLS_MALFORMED,
    DSTACK_RATLS_BAD_LENGTH,
    DSTACK_RATLS_MISMATCH
} dstack_ratls_rc_e;


/*
 * Finds the extension 1.3.6.1.4.1.62397.1.<arc> and returns its payload
 * (pointing into the certificate, valid while it lives).
 */
dstack_ratls_rc_e dstack_ratls_get_ext(X509 *cert, unsigned arc,
    const unsigned char **payload, size_t *len);

/* the `.3` app_id: exactly 20 bytes */
dstack_ratls_rc_e dstack_ratls_app_id(X509 *cert,
    unsigned char app_id[DSTACK_APP_ID_LEN]);

/* the `.4` usage: printable ASCII, NUL-terminated into buf */
dstack_ratls_rc_e dstack_ratls_usage(X509 *cert,
    char buf[DSTACK_USAGE_MAX_LEN + 1]);

/*
 * An App CA that carries an app_id may only issue leaves for that app:
 * DSTACK_RATLS_MISMATCH when both carry `.3` and they differ, or when the
 * issuer's `.3` is malformed.  An issuer without `.3` (a KMS root used
 * directly, or the no-KMS profile) passes.
 */
dstack_ratls_rc_e dstack_ratls_check_issuer(X509 *leaf, X509 *issuer);

const char *dstack_ratls_strerror(dstack_ratls_rc_e rc);

/*
 * an app id's text form is DSTACK_APP_ID_HEX_LEN hex characters:
 * dstack_hex_encode() and dstack_hex_decode() (dstack_hex.h)
 */


#pragma GCC visibility pop


#endif /* _DSTACK_RATLS_H_INCLUDED_ */
