/*
 * Attestation requirements for RA-TLS peers, shared by the nginx modules
 * (inbound callers in ngx_dstack_auth_module, peer servers in
 * ngx_dstack_mesh_module): one verification of a certificate summarised
 * in a small, flat record that can be cached (it holds no pointers), and
 * a verdict for a mode and a set of accepted TCB levels.  Plain C over
 * dstack_attest.h, no nginx headers.
 *
 *     dstack_attest_summarize(leaf, &opts, &sum);        (about 2 ms)
 *     verdict = dstack_attest_judge(&sum, mode, tcb_accept, &check);
 *
 * The summary does not depend on the mode or the accepted TCB levels, so
 * a cached one serves every location.
 */

#ifndef _DSTACK_ATTEST_POLICY_H_INCLUDED_
#define _DSTACK_ATTEST_POLICY_H_INCLUDED_


#include "dstack_attest.h"


#pragma GCC visibility push(hidden)


typedef enum {
    DSTACK_POLICY_OFF = 0,
    DSTACK_POLICY_BIND,         /* binding and RTMR3 replay */
    DSTACK_POLICY_FULL          /* every check, TCB level accepted */
} dstack_policy_mode_e;


typedef enum {
    DSTACK_VERDICT_OK = 0,
    DSTACK_VERDICT_FAILED,      /* no or invalid attestation */
    DSTACK_VERDICT_TCB          /* valid, but the TCB level is refused */
} dstack_verdict_e;


/* the pseudo-check of a certificate without a usable attestation */
#define DSTACK_CHECK_PARSE         (DSTACK_CHECK_N + 1)

#define DSTACK_SUMMARY_ID_LEN      64


typedef struct {
    uint8_t      status[DSTACK_CHECK_N];    /* dstack_check_status_e */
    uint8_t      parsed;
    uint8_t      failed;        /* first failed check (or _PARSE),
                                   DSTACK_CHECK_N: none */
    uint8_t      tcb;           /* dstack_tcb_status_e, _TCB_N: none */
    uint8_t      compose_hash_len;
    uint8_t      instance_id_len;

    u_char       mrtd[48];
    u_char       rtmr[4][48];
    u_char       compose_hash[DSTACK_SUMMARY_ID_LEN];
    u_char       instance_id[DSTACK_SUMMARY_ID_LEN];

    /* why "failed" failed, or why nothing could be parsed */
    char         reason[DSTACK_ATTEST_REASON_LEN];
} dstack_attest_summary_t;


/*
 * Parses and verifies the attestation of a certificate (already verified
 * to its issuer by the caller's TLS stack) with every check and every TCB
 * level accepted; the verdict applies the requirement.  Checks are
 * ordered binding, rtmr3, then the others, so that "failed" names what a
 * "bind" requirement would see first.  Returns 0, or -1 when out of
 * memory.
 */
int dstack_attest_summarize(X509 *leaf, const dstack_attest_opts_t *opts,
    dstack_attest_summary_t *sum);

/* *check: the failed check (DSTACK_CHECK_PARSE included), else _CHECK_N */
dstack_verdict_e dstack_attest_judge(const dstack_attest_summary_t *sum,
    dstack_policy_mode_e mode, unsigned tcb_accept, unsigned *check);

/* the check's name, "parse" for DSTACK_CHECK_PARSE, else "none" */
const char *dstack_attest_check_label(unsigned check);

/*
 * For a TLS verify callback: summarises the peer's leaf and judges it;
 * on refusal writes "<check>: <reason>" into why.
 */
dstack_verdict_e dstack_attest_check_peer(X509 *leaf,
    const dstack_attest_opts_t *opts, dstack_policy_mode_e mode,
    unsigned tcb_accept, char *why, size_t len);

/*
 * Configuration time: loads the pinned Intel root and the collateral
 * (either path may be NULL), and parses an RFC 3339 "now" (NULL: the
 * clock), into opts.  Release with dstack_attest_opts_free().
 */
int dstack_attest_opts_load(dstack_attest_opts_t *opts, const char *root,
    const char *collateral, const char *now, const char **err);
void dstack_attest_opts_free(dstack_attest_opts_t *opts);

/* the same, in the shape of a pool cleanup handler (nginx) */
void dstack_attest_opts_cleanup(void *opts);

/* loads and parses a collateral file; its SHA-256 into digest if not NULL */
dstack_collateral_t *dstack_attest_load_collateral(const char *path,
    u_char digest[32], const char **err);


#pragma GCC visibility pop


#endif /* _DSTACK_ATTEST_POLICY_H_INCLUDED_ */
