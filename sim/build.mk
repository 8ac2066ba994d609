# dstack-sim: the guest-agent simulator (sim/README in docs/sim.md)

SIM_SRCS := sim/sim_main.c sim/sim_util.c sim/sim_http.c sim/sim_api.c \
            sim/sim_cert.c sim/sim_attest.c sim/sim_scale.c
SIM_RATLS := ratls/dstack_attest.c ratls/dstack_attest_verify.c \
             ratls/dstack_ratls.c ratls/dstack_hex.c ratls/dstack_time.c

BINS += $(BUILD)/bin/dstack-sim

$(BUILD)/bin/dstack-sim: $(SIM_SRCS) $(SIM_RATLS) sim/*.h ratls/*.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -D_GNU_SOURCE -Iratls -o $@ $(SIM_SRCS) $(SIM_RATLS) \
	    $(LDFLAGS) -ljansson -lcrypto
