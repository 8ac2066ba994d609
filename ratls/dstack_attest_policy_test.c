/*
 * Unit tests of the attestation requirements (dstack_attest_policy.c),
 * TAP output:
 *
 *   attest-policy-unit [RA_CERT PLAIN_CERT ROOT COLLATERAL]
 *
 * The verdicts are tested on made-up summaries (a refused TCB level
 * cannot be produced with simulated certificates); with the arguments,
 * a simulator leaf and a leaf without attestation are summarised too.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/pem.h>

#include "dstack_attest_policy.h"


static int  tests;
static int  failures;


static void
ok(int cond, const char *name)
{
    tests++;

    if (!cond) {
        failures++;
    }

    printf("%sok %d - %s\n", cond ? "" : "not ", tests, name);
}


static void
passing(dstack_attest_summary_t *sum)
{
    int  i;

    memset(sum, 0, sizeof(dstack_attest_summary_t));

    for (i = 0; i < DSTACK_CHECK_N; i++) {
        sum->status[i] = DSTACK_CHECK_PASS;
    }

    sum->parsed = 1;
    sum->failed = DSTACK_CHECK_N;
    sum->tcb = DSTACK_TCB_UP_TO_DATE;
}


static void
failing(dstack_attest_summary_t *sum, unsigned check)
{
    passing(sum);
    sum->status[check] = DSTACK_CHECK_FAIL;
    sum->failed = (uint8_t) check;
}


static void
verdicts(void)
{
    unsigned                 c;
    dstack_attest_summary_t  s;

    passing(&s);
    ok(dstack_attest_judge(&s, DSTACK_POLICY_BIND, 0, &c) == DSTACK_VERDICT_OK
       && c == DSTACK_CHECK_N, "all pass: bind ok");
    ok(dstack_attest_judge(&s, DSTACK_POLICY_FULL, 0, &c) == DSTACK_VERDICT_OK,
       "all pass: full ok");
    ok(dstack_attest_judge(&s, DSTACK_POLICY_OFF, 0, &c) == DSTACK_VERDICT_OK,
       "off: ok");

    memset(&s, 0, sizeof(s));
    s.failed = DSTACK_CHECK_PARSE;
    s.tcb = DSTACK_TCB_N;
    ok(dstack_attest_judge(&s, DSTACK_POLICY_BIND, 0, &c)
       == DSTACK_VERDICT_FAILED && c == DSTACK_CHECK_PARSE,
       "nothing parsed: bind fails at parse");
    ok(dstack_attest_judge(&s, DSTACK_POLICY_FULL, 0, &c)
       == DSTACK_VERDICT_FAILED && c == DSTACK_CHECK_PARSE,
       "nothing parsed: full fails at parse");
    ok(dstack_attest_judge(&s, DSTACK_POLICY_OFF, 0, &c) == DSTACK_VERDICT_OK,
       "nothing parsed: off ok");

    failing(&s, DSTACK_CHECK_QUOTE_SIG);
    ok(dstack_attest_judge(&s, DSTACK_POLICY_BIND, 0, &c) == DSTACK_VERDICT_OK,
       "bad signature: bind ok");
    ok(dstack_attest_judge(&s, DSTACK_POLICY_FULL, 0, &c)
       == DSTACK_VERDICT_FAILED && c == DSTACK_CHECK_QUOTE_SIG,
       "bad signature: full fails at quote_signature");

    failing(&s, DSTACK_CHECK_BINDING);
    ok(dstack_attest_judge(&s, DSTACK_POLICY_BIND, 0, &c)
       == DSTACK_VERDICT_FAILED && c == DSTACK_CHECK_BINDING,
       "bad binding: bind fails at binding");

    failing(&s, DSTACK_CHECK_RTMR3);
    ok(dstack_attest_judge(&s, DSTACK_POLICY_BIND, 0, &c)
       == DSTACK_VERDICT_FAILED && c == DSTACK_CHECK_RTMR3,
       "bad replay: bind fails at rtmr3");

    passing(&s);
    s.status[DSTACK_CHECK_RTMR3] = DSTACK_CHECK_SKIPPED;
    s.status[DSTACK_CHECK_TCB] = DSTACK_CHECK_SKIPPED;
    s.tcb = DSTACK_TCB_N;
    ok(dstack_attest_judge(&s, DSTACK_POLICY_FULL,
                           DSTACK_TCB_ACCEPT(DSTACK_TCB_UP_TO_DATE), &c)
       == DSTACK_VERDICT_OK, "skipped checks (no collateral): full ok");

    passing(&s);
    s.tcb = DSTACK_TCB_OUT_OF_DATE;
    ok(dstack_attest_judge(&s, DSTACK_POLICY_FULL, 0, &c) == DSTACK_VERDICT_OK,
       "OutOfDate accepted by default");
    ok(dstack_attest_judge(&s, DSTACK_POLICY_FULL,
                           DSTACK_TCB_ACCEPT(DSTACK_TCB_UP_TO_DATE), &c)
       == DSTACK_VERDICT_TCB && c == DSTACK_CHECK_TCB,
       "OutOfDate refused by UpToDate only: tcb verdict");
    ok(dstack_attest_judge(&s, DSTACK_POLICY_BIND,
                           DSTACK_TCB_ACCEPT(DSTACK_TCB_UP_TO_DATE), &c)
       == DSTACK_VERDICT_OK, "TCB levels do not apply to bind");

    s.tcb = DSTACK_TCB_REVOKED;
    ok(dstack_attest_judge(&s, DSTACK_POLICY_FULL, 0, &c)
       == DSTACK_VERDICT_TCB, "Revoked refused by default");

    failing(&s, DSTACK_CHECK_TCB);
    s.tcb = DSTACK_TCB_UP_TO_DATE;
    ok(dstack_attest_judge(&s, DSTACK_POLICY_FULL, 0, &c)
       == DSTACK_VERDICT_FAILED && c == DSTACK_CHECK_TCB,
       "failed TCB check (expired collateral): failed, not refused");

    ok(strcmp(dstack_attest_check_label(DSTACK_CHECK_PARSE), "parse") == 0
       && strcmp(dstack_attest_check_label(DSTACK_CHECK_QUOTE_SIG),
                 "quote_signature") == 0
       && strcmp(dstack_attest_check_label(DSTACK_CHECK_N), "none") == 0,
       "check labels");
}


static X509 *
load_cert(const char *path)
{
    FILE  *f;
    X509  *x;

    f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }

    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);

    return x;
}


static void
certificates(char **argv)
{
    X509                     *ra, *plain;
    char                      why[256];
    const char               *err;
    dstack_attest_opts_t      opts;
    dstack_attest_summary_t   s;

    ra = load_cert(argv[1]);
    plain = load_cert(argv[2]);

    ok(ra != NULL && plain != NULL, "certificates read");

    ok(dstack_attest_opts_load(&opts, argv[3], argv[4],
                               "2025-07-01T00:00:00Z", &err) == 0,
       "root and collateral load");

    if (ra == NULL || plain == NULL || opts.root == NULL) {
        X509_free(ra);
        X509_free(plain);
        return;
    }

    ok(dstack_attest_summarize(ra, &opts, &s) == 0 && s.parsed,
       "simulated leaf: summarised");
    ok(s.status[DSTACK_CHECK_BINDING] == DSTACK_CHECK_PASS
       && s.status[DSTACK_CHECK_RTMR3] == DSTACK_CHECK_PASS,
       "simulated leaf: binding and replay pass");
    ok(s.failed == DSTACK_CHECK_QUOTE_SIG && s.reason[0] != '\0',
       "simulated leaf: quote_signature is the first failure");
    ok(s.tcb == DSTACK_TCB_UP_TO_DATE
       && s.status[DSTACK_CHECK_TCB] == DSTACK_CHECK_PASS,
       "simulated leaf: the template's TCB level (UpToDate)");
    ok(s.compose_hash_len == 32 && s.instance_id_len == 20,
       "simulated leaf: compose hash and instance id");

    ok(dstack_attest_check_peer(ra, &opts, DSTACK_POLICY_BIND, 0, why,
                                sizeof(why))
       == DSTACK_VERDICT_OK, "check_peer: bind passes");
    ok(dstack_attest_check_peer(ra, &opts, DSTACK_POLICY_FULL, 0, why,
                                sizeof(why))
       == DSTACK_VERDICT_FAILED
       && strncmp(why, "quote_signature: ", 17) == 0,
       "check_peer: full fails, reason names the check");

    ok(dstack_attest_summarize(plain, &opts, &s) == 0 && !s.parsed
       && s.failed == DSTACK_CHECK_PARSE
       && strstr(s.reason, "no attestation") != NULL,
       "leaf without .8: parse");
    ok(dstack_attest_check_peer(plain, &opts, DSTACK_POLICY_BIND, 0, why,
                                sizeof(why))
       == DSTACK_VERDICT_FAILED && strncmp(why, "parse: ", 7) == 0,
       "check_peer: no .8 fails bind");

    dstack_attest_opts_free(&opts);

    ok(dstack_attest_opts_load(&opts, NULL, argv[4], NULL, &err) != 0,
       "collateral without root refused");
    ok(dstack_attest_opts_load(&opts, argv[3], NULL, "yesterday", &err) != 0,
       "bad time refused");
    ok(dstack_attest_opts_load(&opts, argv[3], argv[1], NULL, &err) != 0,
       "a certificate is not collateral");
    ok(dstack_attest_opts_load(&opts, "/nonexistent", NULL, NULL, &err) != 0,
       "missing root refused");

    X509_free(ra);
    X509_free(plain);
}


int
main(int argc, char **argv)
{
    verdicts();

    if (argc == 5) {
        certificates(argv);
    }

    printf("1..%d\n", tests);

    return failures ? 1 : 0;
}
