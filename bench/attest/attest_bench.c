/*
 * Micro-benchmark of the attestation library: N cold verifications of the
 * fixture quote (parse, every signature and chain, collateral and TCB)
 * and of the V0 blob, each from scratch.  The baseline is the parse alone,
 * measured in the same run.
 *
 *   attest-bench [N]         (fixtures from $DSTACK_FIXTURES)
 *   attest-bench N CERT      an RA-TLS leaf as nginx sees it: the cold
 *                            summary (dstack_attest_policy.h) against the
 *                            work a cached lookup does outside the zone's
 *                            lock (the leaf's SHA-256, one summary copy)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/pem.h>

#include "dstack_attest.h"
#include "dstack_attest_policy.h"


/* 2025-07-01T00:00:00Z, inside the fixture collateral's validity */
#define BENCH_NOW  1751328000


static double
bench_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


static int
bench_load(const char *dir, const char *rel, u_char **p, size_t *n)
{
    char  path[1024];

    snprintf(path, sizeof(path), "%s/%s", dir, rel);

    return dstack_attest_load_file(path, p, n, 1 << 20);
}


static double
bench_run(const u_char *data, size_t len, dstack_attest_opts_t *opts,
    int verify, int n, int *failures)
{
    int                     i;
    double                  t0;
    const char             *err;
    dstack_attest_t         att;
    dstack_attest_result_t  res;

    *failures = 0;
    t0 = bench_now();

    for (i = 0; i < n; i++) {
        dstack_attest_init(&att);

        if (dstack_attest_parse_blob(data, len, &att, &err) != 0) {
            (*failures)++;
            continue;
        }

        if (verify && dstack_attest_verify(&att, opts, &res) != 0) {
            (*failures)++;
        }

        dstack_attest_free(&att);
    }

    return (bench_now() - t0) / n * 1e3;
}


static int
bench_cert(const char *path, dstack_attest_opts_t *opts, int n)
{
    int                       i, failed;
    FILE                     *f;
    X509                     *leaf;
    double                    t0, cold, cached;
    unsigned                  len;
    dstack_attest_summary_t   sum, copy;
    u_char                    md[32];

    f = fopen(path, "r");
    leaf = (f != NULL) ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

    if (f != NULL) {
        fclose(f);
    }

    if (leaf == NULL) {
        printf("attest: cannot read the certificate \"%s\"\n", path);
        return 1;
    }

    failed = 0;
    t0 = bench_now();

    for (i = 0; i < n; i++) {
        if (dstack_attest_summarize(leaf, opts, &sum) != 0
            || !sum.parsed)
        {
            failed++;
        }
    }

    cold = (bench_now() - t0) / n * 1e3;

    t0 = bench_now();

    for (i = 0; i < n * 100; i++) {
        if (X509_digest(leaf, EVP_sha256(), md, &len) != 1) {
            failed++;
        }

        memcpy(&copy, &sum, sizeof(dstack_attest_summary_t));
        __asm__ __volatile__("" : : "r" (&copy) : "memory");
    }

    cached = (bench_now() - t0) / (n * 100) * 1e3;

    printf("attest: RA-TLS leaf, cold verification    %8.3f ms/op  "
           "(%d runs, first failed check \"%s\", target < 5 ms: %s)\n",
           cold, n, dstack_attest_check_label(sum.failed),
           cold < 5.0 ? "met" : "MISSED");
    printf("attest: RA-TLS leaf, cached lookup work   %8.4f ms/op  "
           "(SHA-256 of the leaf + summary copy, %d runs)\n", cached,
           n * 100);

    X509_free(leaf);

    return failed ? 1 : 0;
}


int
main(int argc, char **argv)
{
    int                    n, f1, f2, f3;
    char                   path[1024];
    u_char                *quote, *blob, *cj;
    size_t                 qlen, blen, clen;
    double                 parse, full, v0;
    const char            *dir, *err;
    dstack_attest_opts_t   opts;

    n = argc > 1 ? atoi(argv[1]) : 300;
    dir = getenv("DSTACK_FIXTURES");

    if (dir == NULL || dir[0] == '\0') {
        dir = "t/fixtures";
    }

    if (n <= 0
        || bench_load(dir, "tdx/quote-v4.bin", &quote, &qlen) != 0
        || bench_load(dir, "tdx/attestation-v0.bin", &blob, &blen) != 0
        || bench_load(dir, "tdx/quote-v4.collateral.json", &cj, &clen) != 0)
    {
        printf("attest: skipped (no fixtures in %s)\n", dir);
        return 0;
    }

    memset(&opts, 0, sizeof(opts));
    snprintf(path, sizeof(path), "%s/intel/sgx-root-ca.pem", dir);
    opts.root = dstack_attest_load_root(path, &err);
    opts.collateral = dstack_collateral_parse(cj, clen, &err);
    opts.now = BENCH_NOW;

    if (opts.root == NULL || opts.collateral == NULL) {
        printf("attest: skipped (%s)\n", err);
        return 0;
    }

    if (argc > 2) {
        return bench_cert(argv[2], &opts, n);
    }

    parse = bench_run(quote, qlen, &opts, 0, n * 10, &f1);
    full = bench_run(quote, qlen, &opts, 1, n, &f2);

    /* the blob's PCK certificate is younger than the collateral */
    opts.collateral = NULL;
    opts.now = 0;
    v0 = bench_run(blob, blen, &opts, 1, n, &f3);

    printf("attest: parse only (baseline)              %8.4f ms/op\n", parse);
    printf("attest: full verification, quote+collateral %7.3f ms/op  "
           "(%d runs, %d failed, target < 5 ms: %s)\n", full, n, f2,
           full < 5.0 ? "met" : "MISSED");
    printf("attest: V0 blob, no collateral             %8.3f ms/op  "
           "(%d runs, %d failed)\n", v0, n, f3);

    free(quote);
    free(blob);
    free(cj);

    return (f1 || f2 || f3) ? 1 : 0;
}
