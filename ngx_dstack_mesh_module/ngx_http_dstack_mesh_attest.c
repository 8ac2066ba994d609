/* this module's private copy of the attestation parser (see _ratls.c) */

#include "../ratls/dstack_attest.c"
