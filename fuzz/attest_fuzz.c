/*
 * libFuzzer target for the attestation parsers (ratls/dstack_attest*.c):
 * the blob dispatcher (bare quote, V0 SCALE, V1 MessagePack), the quote
 * parser, the legacy JSON event log, the collateral, and the checks that
 * run on whatever parses (no root, no collateral: no I/O).
 */

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "dstack_attest.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char              *err;
    dstack_quote_t           q;
    dstack_attest_t          att;
    dstack_attest_opts_t     opts;
    dstack_collateral_t     *col;
    dstack_attest_result_t   res;

    memset(&opts, 0, sizeof(opts));
    opts.now = 1751328000;

    dstack_attest_init(&att);

    if (dstack_attest_parse_blob(data, size, &att, &err) == 0) {
        dstack_attest_verify(&att, &opts, &res);
    }

    dstack_attest_free(&att);

    (void) dstack_attest_parse_quote(data, size, &q, &err);

    if (dstack_attest_parse_legacy(data, size, data, size, &att, &err) == 0) {
        dstack_attest_verify(&att, &opts, &res);
    }

    dstack_attest_free(&att);

    if (size > 0 && data[0] == '{') {
        col = dstack_collateral_parse(data, size, &err);
        dstack_collateral_free(col);
    }

    return 0;
}
