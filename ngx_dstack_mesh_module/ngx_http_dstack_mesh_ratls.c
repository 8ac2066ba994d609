/*
 * This module's private copy of the shared library (ratls/): every
 * dynamic module links its own copy, hidden by the headers' visibility
 * pragma, so two modules loaded into one nginx never share or override
 * each other's symbols.
 */

#include "../ratls/dstack_hex.c"
#include "../ratls/dstack_time.c"
#include "../ratls/dstack_ratls.c"
#include "../ratls/dstack_header.c"
#include "../ratls/dstack_attest.c"
#include "../ratls/dstack_attest_verify.c"
#include "../ratls/dstack_attest_policy.c"
