# wgctl: the WireGuard helper, and its unit tests (TAP).  "wgctl verify"
# is the verifier of ratls/build.mk (ratls/dstack_verify.c) on the
# attestation library there.

WGCTL_LIBS      := -lmnl -lcrypto -ljansson -lcurl -lhiredis -lpthread
WGCTL_OBJDIR    := $(BUILD)/obj/wgctl
WGCTL_CORE      := wgdev keys wgdiff config ipc uapi genl rtnl hosts \
                   peermap path relay
WGCTL_CMDS      := show setconf link genkey hostsconf up cpclient log ctrl \
                   state status metrics admin cp_lua relay_main
WGCTL_HDRS      := $(wildcard wgctl/*.h)
WGCTL_CORE_OBJS := $(WGCTL_CORE:%=$(WGCTL_OBJDIR)/%.o)
WGCTL_CMD_OBJS  := $(WGCTL_CMDS:%=$(WGCTL_OBJDIR)/%.o) \
                   $(ATTEST_SRCS:ratls/%.c=$(WGCTL_OBJDIR)/ratls/%.o) \
                   $(ATTEST_CLI_SRCS:ratls/%.c=$(WGCTL_OBJDIR)/ratls/%.o)
WGCTL_TEST_OBJS := $(patsubst wgctl/%.c,$(WGCTL_OBJDIR)/%.o,\
                     $(wildcard wgctl/test_*.c))

BINS += $(BUILD)/bin/wgctl $(BUILD)/bin/wgctl-unit

$(WGCTL_OBJDIR)/%.o: wgctl/%.c $(WGCTL_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -std=gnu11 -c -o $@ $<

# the admin commands run the control plane's own Lua scripts (lua/build.mk)
$(WGCTL_OBJDIR)/admin.o: wgctl/admin.c $(WGCTL_HDRS) \
                         lua/ngx_http_dstack_vpc_cp_lua.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -std=gnu11 -Ilua -c -o $@ $<

$(WGCTL_OBJDIR)/cp_lua.o: lua/ngx_http_dstack_vpc_cp_lua.c \
                          lua/ngx_http_dstack_vpc_cp_lua.h $(LUA_GEN_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -std=gnu11 -Ilua -I$(LUA_GEN) -c -o $@ $<

$(WGCTL_OBJDIR)/ratls/%.o: ratls/%.c $(ATTEST_HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -std=gnu11 -Iratls -c -o $@ $<

$(BUILD)/bin/wgctl: $(WGCTL_OBJDIR)/wgctl.o $(WGCTL_CMD_OBJS) $(WGCTL_CORE_OBJS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(WGCTL_LIBS)

$(BUILD)/bin/wgctl-unit: $(WGCTL_TEST_OBJS) $(WGCTL_CORE_OBJS)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $^ $(WGCTL_LIBS)
