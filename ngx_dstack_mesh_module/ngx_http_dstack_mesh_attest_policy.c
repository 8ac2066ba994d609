/* this module's private copy of the attestation policy (see _ratls.c) */

#include "../ratls/dstack_attest_policy.c"
