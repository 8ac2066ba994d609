/* this module's private copy of the attestation checks (see _ratls.c) */

#include "../ratls/dstack_attest_verify.c"
