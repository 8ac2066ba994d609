/*
 * The simulator's SCALE encoder: a V0 attestation (the `.8` extension,
 * docs/attestation.md) built from a real TDX quote used as a template.
 * Only dstack-sim and the attestation unit test use it; the verifiers in
 * ratls/ only parse.
 */

#ifndef _SIM_SCALE_H_INCLUDED_
#define _SIM_SCALE_H_INCLUDED_


#include <stddef.h>
#include <sys/types.h>


/*
 * A V0 blob from a template quote, with report_data =
 * SHA512("ratls-cert:" || spki) and RTMR3 set to the replay of the app-id,
 * compose-hash and instance-id events it writes (hex, at most 64 bytes
 * each).  The Intel signature no longer matches, the binding and the
 * replay do.  *out is malloc()ed, for free().
 */
int sim_scale_build_v0(const u_char *template_quote, size_t len,
    const u_char *spki_der, size_t spki_len, const char *app_id_hex,
    const char *instance_id_hex, const char *compose_hash_hex,
    u_char **out, size_t *out_len);


#endif /* _SIM_SCALE_H_INCLUDED_ */
