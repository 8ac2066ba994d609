SHELL := /bin/bash
# dstack-vpc-nginx: dynamic nginx modules, wgctl, the guest-agent simulator.
#
#   make            build everything into build/
#   make test       install missing packages, build, run the whole suite
#   make test-asan  the same with AddressSanitizer builds (into build-asan/)
#   make test-vm    only the QEMU tests (kernel WireGuard, CVM-shaped nodes)
#   make bench      benchmarks, each against a baseline measured in the same run
#   make fuzz       bounded libFuzzer runs of the parsers

ASAN        ?= 0
ifeq ($(ASAN),1)
BUILD       ?= $(CURDIR)/build-asan
SAN_FLAGS   := -fsanitize=address -fno-omit-frame-pointer
else
BUILD       ?= $(CURDIR)/build
SAN_FLAGS   :=
endif

CC          ?= gcc
WARN        := -Wall -Wextra -Werror -Wno-unused-parameter
OPT         := -O2 -g -fstack-protector-strong -D_FORTIFY_SOURCE=2
CFLAGS      ?= $(OPT)
CFLAGS      += $(WARN) $(SAN_FLAGS)
LDFLAGS     += $(SAN_FLAGS)

NGX_SRC     := /usr/share/nginx/src
NGX_BUILD   := $(BUILD)/nginx
MODULES_DIR := $(BUILD)/modules
# test-only modules: folders with their own nginx `config`, configured with
# the shipped ones (same flags, same signature), copied to TEST_MODULES_DIR
# and never installed; their names end in _test_module
NGX_TEST_MODULES := ngx_dstack_vpc_api_module/t
TEST_MODULES_DIR := $(BUILD)/test-modules
PROVE       ?= prove
TESTS       ?= t/

# Folders add their own targets through a build.mk fragment; each appends
# to BINS (programs built into $(BUILD)/bin) or FUZZ_TARGETS (phony targets
# run by `make fuzz`) or LINT_TARGETS (phony targets run by `make lint`)
# and may use the variables above.
BINS        :=
FUZZ_TARGETS :=
LINT_TARGETS :=
MODULE_SRCS := $(wildcard config */config.module ngx_dstack_*/*.[ch] ratls/*.[ch] \
                          lua/*.[ch]) \
               $(wildcard $(NGX_TEST_MODULES:%=%/config) \
                          $(NGX_TEST_MODULES:%=%/*.c))

# a bare `make` builds everything, whatever rule an included fragment has
# first
.DEFAULT_GOAL := all

-include */build.mk

.PHONY: all modules bins deps lint test test-asan test-vm bench fuzz clean

all: modules bins

deps:
	@./scripts/deps.sh

modules: $(MODULES_DIR)/.stamp

# Debian's own configure flags, so that the headers match the stock binary
# (NGX_HTTP_SSL, NGX_THREADS, debug); see DESIGN §2.
$(NGX_BUILD)/.configured: config $(wildcard */config.module) \
                          $(NGX_TEST_MODULES:%=%/config)
	@rm -rf $(NGX_BUILD) && mkdir -p $(BUILD) && cp -r $(NGX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && . ./conf_flags \
	    && DSTACK_LUA_GEN=$(LUA_GEN) ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$(CFLAGS)" --with-ld-opt="$(LDFLAGS)" \
	        --add-dynamic-module=$(CURDIR) \
	        $(NGX_TEST_MODULES:%=--add-dynamic-module=$(CURDIR)/%) \
	        >$(NGX_BUILD)/configure.log 2>&1 \
	    || { tail -20 $(NGX_BUILD)/configure.log; exit 1; }
	@touch $@

$(MODULES_DIR)/.stamp: $(NGX_BUILD)/.configured $(MODULE_SRCS) $(LUA_GEN_HDRS)
	$(MAKE) -s -C $(NGX_BUILD) -f objs/Makefile modules
	@# rename over the old file: running nginx processes keep their mapping
	@mkdir -p $(MODULES_DIR) $(TEST_MODULES_DIR) \
	&& for so in $(NGX_BUILD)/objs/*.so; do \
	    case "$$so" in \
	    *_test_module.so) dir=$(TEST_MODULES_DIR) ;; \
	    *) dir=$(MODULES_DIR) ;; \
	    esac; \
	    cp "$$so" $$dir/.tmp.so && mv -f $$dir/.tmp.so $$dir/$${so##*/} \
	    || exit 1; \
	done
	@touch $@

bins: $(BINS)

# static checks that need no build (luacheck: lua/build.mk); make test runs
# them
lint: $(LINT_TARGETS)

# Files that skip append "t/file.t: reason" to $(BUILD)/test-skips.log (the
# harness, t/lib/Test/Dstack.pm); the last line of the run lists them.
# Under CI=true a missing requirement fails instead of skipping.
SKIP_SUMMARY = { printf 'skipped: '; \
    if [ -s $(1)/test-skips.log ]; then \
        sort -u $(1)/test-skips.log | paste -sd ';' | sed 's/;/; /g'; \
    else echo none; fi; }

test: deps
	$(MAKE) all lint
	@rm -f $(BUILD)/test-skips.log
	DSTACK_BUILD=$(BUILD) $(PROVE) -r -j2 $(TESTS); \
	    rc=$$?; $(call SKIP_SUMMARY,$(BUILD)); exit $$rc

# only the QEMU tests (also part of make test): kernel WireGuard, and
# CVM-shaped guests joined over the relay path
test-vm: deps
	$(MAKE) all
	DSTACK_BUILD=$(BUILD) $(PROVE) -v t/wgctl-kernel.t t/vm-cvm.t

test-asan: deps
	$(MAKE) ASAN=1 all
	@rm -f $(CURDIR)/build-asan/test-skips.log
	DSTACK_BUILD=$(CURDIR)/build-asan DSTACK_ASAN=1 $(PROVE) -r -j2 $(TESTS); \
	    rc=$$?; $(call SKIP_SUMMARY,$(CURDIR)/build-asan); exit $$rc

bench: deps all
	@for b in bench/*/run; do [ -x "$$b" ] && DSTACK_BUILD=$(BUILD) "$$b"; done; true

fuzz: $(FUZZ_TARGETS)

clean:
	rm -rf build build-asan

# --- deployment (README: "The image") -----------------------------------------
#   make demo        as root: a whole local VPC in network namespaces, until Ctrl-C
#   make demo-down   remove what a demo left behind
#   make install     modules, templates and entry script under $(PREFIX)/lib/dstack-vpc,
#                    wgctl in $(PREFIX)/bin (the Dockerfile's layout; DESTDIR honoured)
#   make image       build the image (docker, else podman; scripts/image.sh)
#   make test-image  build it and run t/image.t against it (as root)

PREFIX      ?= /usr/local
VPC_LIB     := $(PREFIX)/lib/dstack-vpc

.PHONY: demo demo-down install image test-image

IMAGE       ?= dstack-vpc-nginx:latest

image:
	@./scripts/deps.sh
	IMAGE=$(IMAGE) ./scripts/image.sh build

# the host build supplies dstack-sim and the test harness's helpers
test-image: image all
	DSTACK_IMAGE_TEST=1 DSTACK_BUILD=$(BUILD) IMAGE=$(IMAGE) \
	    $(PROVE) -v t/image.t

demo:
	@./scripts/demo.sh --preflight
	@$(MAKE) -s deps all
	@./scripts/demo.sh

demo-down:
	@./scripts/demo.sh --down

install: all
	install -d $(DESTDIR)$(VPC_LIB)/modules $(DESTDIR)$(VPC_LIB)/conf \
	    $(DESTDIR)$(VPC_LIB)/scripts $(DESTDIR)$(PREFIX)/bin
	install -m 0644 $(MODULES_DIR)/*.so $(DESTDIR)$(VPC_LIB)/modules/
	install -m 0644 conf/*.conf conf/*.template $(DESTDIR)$(VPC_LIB)/conf/
	install -m 0755 scripts/entrypoint.sh $(DESTDIR)$(VPC_LIB)/scripts/
	install -m 0755 $(BUILD)/bin/wgctl $(DESTDIR)$(PREFIX)/bin/
