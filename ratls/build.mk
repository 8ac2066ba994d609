# The attestation library (dstack_attest*.c, docs/attestation.md): its unit
# test, the standalone `dstack-verify` CLI and its micro-benchmark.  The
# nginx modules compile the same sources through their config.module.

ATTEST_SRCS := ratls/dstack_attest.c ratls/dstack_attest_verify.c \
               ratls/dstack_ratls.c ratls/dstack_hex.c ratls/dstack_time.c
ATTEST_HDRS := ratls/dstack_attest.h ratls/dstack_ratls.h ratls/dstack_hex.h \
               ratls/dstack_time.h
ATTEST_LIBS := -lcrypto -ljansson
# the verifier's command line, shared by dstack-verify and `wgctl verify`
ATTEST_CLI_SRCS := ratls/dstack_verify.c

BINS += $(BUILD)/bin/attest-unit $(BUILD)/bin/dstack-verify \
        $(BUILD)/bin/attest-bench

# the simulated V0 blobs it checks come from the simulator's encoder
$(BUILD)/bin/attest-unit: ratls/dstack_attest_test.c $(ATTEST_SRCS) \
                          $(ATTEST_HDRS) sim/sim_scale.c sim/sim_scale.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iratls -Isim -o $@ ratls/dstack_attest_test.c \
	    sim/sim_scale.c $(ATTEST_SRCS) $(LDFLAGS) $(ATTEST_LIBS)

$(BUILD)/bin/dstack-verify: ratls/dstack_verify_main.c $(ATTEST_CLI_SRCS) \
                            $(ATTEST_SRCS) $(ATTEST_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iratls -o $@ ratls/dstack_verify_main.c \
	    $(ATTEST_CLI_SRCS) $(ATTEST_SRCS) $(LDFLAGS) $(ATTEST_LIBS)

$(BUILD)/bin/attest-bench: bench/attest/attest_bench.c $(ATTEST_SRCS) \
                           $(ATTEST_HDRS) ratls/dstack_attest_policy.c \
                           ratls/dstack_attest_policy.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iratls -o $@ bench/attest/attest_bench.c \
	    ratls/dstack_attest_policy.c $(ATTEST_SRCS) $(LDFLAGS) \
	    $(ATTEST_LIBS)

# the attestation requirements the nginx modules apply (nginx section of
# docs/attestation.md)
BINS += $(BUILD)/bin/attest-policy-unit

$(BUILD)/bin/attest-policy-unit: ratls/dstack_attest_policy_test.c \
                                 ratls/dstack_attest_policy.c \
                                 ratls/dstack_attest_policy.h \
                                 $(ATTEST_SRCS) $(ATTEST_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iratls -o $@ ratls/dstack_attest_policy_test.c \
	    ratls/dstack_attest_policy.c $(ATTEST_SRCS) $(LDFLAGS) $(ATTEST_LIBS)
