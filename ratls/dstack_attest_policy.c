/*
 * Attestation requirements for RA-TLS peers (dstack_attest_policy.h).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "dstack_attest_policy.h"
#include "dstack_hex.h"


#define DSTACK_POLICY_COLLATERAL_MAX  (1024 * 1024)


static uint8_t dstack_policy_unhex(u_char *out, size_t max,
    const char *hex);


/* bind's checks first: "failed" is then right for both modes */
static const uint8_t  dstack_policy_order[DSTACK_CHECK_N] = {
    DSTACK_CHECK_BINDING,
    DSTACK_CHECK_RTMR3,
    DSTACK_CHECK_QUOTE_SIG,
    DSTACK_CHECK_QE_REPORT,
    DSTACK_CHECK_PCK_CHAIN,
    DSTACK_CHECK_TD_POLICY,
    DSTACK_CHECK_TCB
};


int
dstack_attest_summarize(X509 *leaf, const dstack_attest_opts_t *opts,
    dstack_attest_summary_t *sum)
{
    int                     i, tcb;
    unsigned                c;
    const char             *err;
    dstack_attest_t         att;
    dstack_attest_opts_t    o;
    dstack_attest_result_t  res;

    memset(sum, 0, sizeof(dstack_attest_summary_t));
    sum->failed = DSTACK_CHECK_N;
    sum->tcb = DSTACK_TCB_N;

    dstack_attest_init(&att);

    err = "certificate carries no attestation";

    if (dstack_attest_parse_cert(leaf, &att, &err) != 0) {
        dstack_attest_free(&att);

        if (strcmp(err, "out of memory") == 0) {
            return -1;
        }

        sum->failed = DSTACK_CHECK_PARSE;
        snprintf(sum->reason, sizeof(sum->reason), "%s", err);

        return 0;
    }

    /* the verdict applies the mode and the TCB levels, not the library */
    o = *opts;
    o.require = DSTACK_REQUIRE_FULL;
    o.tcb_accept = (1u << DSTACK_TCB_N) - 1;

    (void) dstack_attest_verify(&att, &o, &res);

    dstack_attest_free(&att);

    sum->parsed = 1;

    for (i = 0; i < DSTACK_CHECK_N; i++) {
        sum->status[i] = (uint8_t) res.check[i].status;
    }

    for (i = 0; i < DSTACK_CHECK_N; i++) {
        c = dstack_policy_order[i];

        if (res.check[c].status != DSTACK_CHECK_PASS
            && res.check[c].status != DSTACK_CHECK_SKIPPED)
        {
            sum->failed = (uint8_t) c;
            snprintf(sum->reason, sizeof(sum->reason), "%s",
                     res.check[c].reason);
            break;
        }
    }

    if (res.tcb_status[0] != '\0') {
        tcb = dstack_tcb_status_parse(res.tcb_status,
                                      strlen(res.tcb_status));

        if (tcb >= 0 && tcb < DSTACK_TCB_N) {
            sum->tcb = (uint8_t) tcb;
        }
    }

    (void) dstack_policy_unhex(sum->mrtd, 48, res.mrtd);

    for (i = 0; i < 4; i++) {
        (void) dstack_policy_unhex(sum->rtmr[i], 48, res.rtmr[i]);
    }

    sum->compose_hash_len = dstack_policy_unhex(sum->compose_hash,
                                                DSTACK_SUMMARY_ID_LEN,
                                                res.compose_hash);
    sum->instance_id_len = dstack_policy_unhex(sum->instance_id,
                                               DSTACK_SUMMARY_ID_LEN,
                                               res.instance_id);

    return 0;
}


dstack_verdict_e
dstack_attest_judge(const dstack_attest_summary_t *sum,
    dstack_policy_mode_e mode, unsigned tcb_accept, unsigned *check)
{
    unsigned  accept;

    *check = DSTACK_CHECK_N;

    if (mode == DSTACK_POLICY_OFF) {
        return DSTACK_VERDICT_OK;
    }

    if (!sum->parsed) {
        *check = DSTACK_CHECK_PARSE;
        return DSTACK_VERDICT_FAILED;
    }

    if (mode == DSTACK_POLICY_BIND) {
        if (sum->failed == DSTACK_CHECK_BINDING
            || sum->failed == DSTACK_CHECK_RTMR3)
        {
            *check = sum->failed;
            return DSTACK_VERDICT_FAILED;
        }

        return DSTACK_VERDICT_OK;
    }

    if (sum->failed != DSTACK_CHECK_N) {
        *check = sum->failed;
        return DSTACK_VERDICT_FAILED;
    }

    accept = tcb_accept ? tcb_accept : DSTACK_TCB_ACCEPT_DEFAULT;

    if (sum->status[DSTACK_CHECK_TCB] == DSTACK_CHECK_PASS
        && sum->tcb < DSTACK_TCB_N
        && !(accept & DSTACK_TCB_ACCEPT(sum->tcb)))
    {
        *check = DSTACK_CHECK_TCB;
        return DSTACK_VERDICT_TCB;
    }

    return DSTACK_VERDICT_OK;
}


const char *
dstack_attest_check_label(unsigned check)
{
    if (check < DSTACK_CHECK_N) {
        return dstack_check_name((dstack_check_e) check);
    }

    return (check == DSTACK_CHECK_PARSE) ? "parse" : "none";
}


dstack_verdict_e
dstack_attest_check_peer(X509 *leaf, const dstack_attest_opts_t *opts,
    dstack_policy_mode_e mode, unsigned tcb_accept, char *why, size_t len)
{
    unsigned                  check;
    dstack_verdict_e          v;
    dstack_attest_summary_t   sum;

    if (mode == DSTACK_POLICY_OFF) {
        return DSTACK_VERDICT_OK;
    }

    if (dstack_attest_summarize(leaf, opts, &sum) != 0) {
        snprintf(why, len, "parse: out of memory");
        return DSTACK_VERDICT_FAILED;
    }

    v = dstack_attest_judge(&sum, mode, tcb_accept, &check);

    if (v == DSTACK_VERDICT_TCB) {
        snprintf(why, len, "tcb: TCB status %s is not accepted",
                 dstack_tcb_status_name((dstack_tcb_status_e) sum.tcb));

    } else if (v == DSTACK_VERDICT_FAILED) {
        snprintf(why, len, "%s: %s", dstack_attest_check_label(check),
                 sum.reason);
    }

    return v;
}


int
dstack_attest_opts_load(dstack_attest_opts_t *opts, const char *root,
    const char *collateral, const char *now, const char **err)
{
    time_t  t;

    memset(opts, 0, sizeof(dstack_attest_opts_t));

    if (now != NULL
        && dstack_time_parse(now, strlen(now), &t) == 0)
    {
        opts->now = t;

    } else if (now != NULL) {
        *err = "invalid time (RFC 3339 expected)";
        return -1;
    }

    if (collateral != NULL && root == NULL) {
        *err = "collateral needs the pinned Intel root";
        return -1;
    }

    if (root != NULL) {
        opts->root = dstack_attest_load_root(root, err);

        if (opts->root == NULL) {
            ERR_clear_error();
            return -1;
        }
    }

    if (collateral != NULL) {
        opts->collateral = dstack_attest_load_collateral(collateral, NULL,
                                                         err);

        if (opts->collateral == NULL) {
            dstack_attest_opts_free(opts);
            return -1;
        }
    }

    return 0;
}


dstack_collateral_t *
dstack_attest_load_collateral(const char *path, u_char digest[32],
    const char **err)
{
    u_char               *data;
    size_t                len;
    dstack_collateral_t  *col;

    if (dstack_attest_load_file(path, &data, &len,
                                DSTACK_POLICY_COLLATERAL_MAX)
        != 0)
    {
        *err = "cannot read the collateral file";
        return NULL;
    }

    col = dstack_collateral_parse(data, len, err);

    if (col != NULL && digest != NULL
        && EVP_Digest(data, len, digest, NULL, EVP_sha256(), NULL) != 1)
    {
        dstack_collateral_free(col);
        *err = "cannot hash the collateral";
        col = NULL;
    }

    free(data);
    ERR_clear_error();

    return col;
}


void
dstack_attest_opts_free(dstack_attest_opts_t *opts)
{
    X509_free(opts->root);
    dstack_collateral_free((dstack_collateral_t *) opts->collateral);

    opts->root = NULL;
    opts->collateral = NULL;
}


void
dstack_attest_opts_cleanup(void *opts)
{
    dstack_attest_opts_free(opts);
}


/* a result's hex field to bytes: the length, 0 for an empty or bad one */

static uint8_t
dstack_policy_unhex(u_char *out, size_t max, const char *hex)
{
    ssize_t  n;

    n = dstack_hex_decode(out, max, hex, strlen(hex));

    return n > 0 ? (uint8_t) n : 0;
}

