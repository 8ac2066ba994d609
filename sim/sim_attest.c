/*
 * The simulated RA-TLS attestation (.8): a V0 blob built from a real quote
 * used as a template, bound to the leaf's key and carrying app-id,
 * compose-hash and instance-id events that replay to its RTMR3.  Its
 * Intel signature cannot match (the simulator has no TDX), so verifiers
 * report binding and replay as passing and the signature checks failing.
 */

#include <stdio.h>
#include <stdlib.h>

#include "sim.h"
#include "dstack_attest.h"
#include "sim_scale.h"


#define SIM_QUOTE_MAX  (64 * 1024)


int
sim_attest_load(sim_ctx_t *ctx, const char *path)
{
    if (dstack_attest_load_file(path, &ctx->quote_template,
                                &ctx->quote_template_len, SIM_QUOTE_MAX)
        != 0)
    {
        fprintf(stderr, "dstack-sim: cannot read quote template \"%s\"\n",
                path);
        return -1;
    }

    ctx->ra_tls_hook = sim_attest_hook;
    ctx->ra_tls_data = ctx;

    return 0;
}


int
sim_attest_hook(X509 *leaf, const u_char *spki, size_t spki_len, void *data)
{
    int         rc;
    char        app[2 * SIM_ID_LEN + 1], inst[2 * SIM_ID_LEN + 1];
    char        compose[2 * 32 + 1];
    u_char     *blob;
    size_t      len;
    sim_ctx_t  *ctx;

    ctx = data;

    *dstack_hex_encode(app, ctx->app_id, SIM_ID_LEN) = '\0';
    *dstack_hex_encode(inst, ctx->instance_id, SIM_ID_LEN) = '\0';
    *dstack_hex_encode(compose, ctx->compose_hash, 32) = '\0';

    if (sim_scale_build_v0(ctx->quote_template, ctx->quote_template_len,
                           spki, spki_len, app, inst, compose, &blob, &len)
        != 0)
    {
        sim_log("cannot build the simulated attestation");
        return -1;
    }

    rc = sim_cert_add_wrapped(leaf, 8, blob, len);

    free(blob);

    return rc;
}
