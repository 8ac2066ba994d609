/*
 * This module's private copy of the shared RA-TLS parser: every dynamic
 * module links its own (hidden) copy, so the objects get distinct names.
 */

#include "../ratls/dstack_ratls.c"
#include "../ratls/dstack_header.c"
