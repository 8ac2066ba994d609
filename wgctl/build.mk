# wgctl: the WireGuard helper, and its unit tests (TAP).

WGCTL_LIBS      := -lmnl -lcrypto
WGCTL_OBJDIR    := $(BUILD)/obj/wgctl
WGCTL_CORE      := wgdev keys wgdiff config uapi genl rtnl hosts
WGCTL_CMDS      := show setconf link genkey hostsconf
WGCTL_HDRS      := $(wildcard wgctl/*.h)
WGCTL_CORE_OBJS := $(WGCTL_CORE:%=$(WGCTL_OBJDIR)/%.o)
WGCTL_CMD_OBJS  := $(WGCTL_CMDS:%=$(WGCTL_OBJDIR)/%.o)
WGCTL_TEST_OBJS := $(patsubst wgctl/%.c,$(WGCTL_OBJDIR)/%.o,\
                     $(wildcard wgctl/test_*.c))

BINS += $(BUILD)/bin/wgctl $(BUILD)/bin/wgctl-unit

$(WGCTL_OBJDIR)/%.o: wgctl/%.c $(WGCTL_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -std=gnu11 -c -o $@ $<

$(BUILD)/bin/wgctl: $(WGCTL_OBJDIR)/wgctl.o $(WGCTL_CMD_OBJS) $(WGCTL_CORE_OBJS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(WGCTL_LIBS)

$(BUILD)/bin/wgctl-unit: $(WGCTL_TEST_OBJS) $(WGCTL_CORE_OBJS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(WGCTL_LIBS)
