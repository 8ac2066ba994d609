# dstack-sim: the guest-agent simulator (sim/README in docs/sim.md)

SIM_SRCS := sim/sim_main.c sim/sim_http.c sim/sim_api.c sim/sim_cert.c

BINS += $(BUILD)/bin/dstack-sim

$(BUILD)/bin/dstack-sim: $(SIM_SRCS) sim/sim.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -D_GNU_SOURCE -o $@ $(SIM_SRCS) $(LDFLAGS) -ljansson -lcrypto
