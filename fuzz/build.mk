# Bounded libFuzzer runs (`make fuzz` runs every target in FUZZ_TARGETS,
# each for FUZZ_SECONDS):
#
#   make fuzz-attest     [FUZZ_SECONDS=60]  attestation blobs, quotes,
#                        legacy event logs, collateral (ratls/dstack_attest*)
#   make fuzz-ratls-cert [FUZZ_SECONDS=60]  the dstack extensions inside an
#                        X.509 certificate (.3 .4 .8 .9, legacy .1/.2)
#   make fuzz-peermap    [FUZZ_SECONDS=60]  wgctl's map stream: framing and
#                        MapResponse parsing (wgctl/peermap.c)
#
# Seeds: fuzz-attest's are generated at run time from t/fixtures (or
# $DSTACK_FIXTURES) by attest-unit --seeds; the other two are committed
# under fuzz/corpus/ (real certificates from the simulator, map frames
# captured from the control plane: fuzz/make-corpus regenerates them).
# Each run works on a copy in a temporary folder, so new inputs never land
# in the repository.  A crashing input is kept as $(BUILD)/fuzz/<name>-*.

FUZZ_SECONDS     ?= 60
FUZZ_CC          ?= clang
FUZZ_DIR         := $(BUILD)/fuzz
FUZZ_FLAGS       := -g -O1 -fsanitize=fuzzer,address,undefined \
                    -fno-sanitize-recover=undefined \
                    -Wall -Wextra -Werror -Wno-unused-parameter
FUZZ_ATTEST_SRCS := ratls/dstack_attest.c ratls/dstack_attest_verify.c \
                    ratls/dstack_ratls.c ratls/dstack_hex.c \
                    ratls/dstack_time.c
FUZZ_ATTEST_HDRS := ratls/dstack_attest.h ratls/dstack_ratls.h \
                    ratls/dstack_hex.h ratls/dstack_time.h
# wgctl/build.mk's WGCTL_CORE (that file is read after this one)
FUZZ_WGCTL_SRCS  := $(addprefix wgctl/,wgdev.c keys.c wgdiff.c config.c \
                    uapi.c genl.c rtnl.c hosts.c peermap.c)

FUZZ_TARGETS += fuzz-attest fuzz-ratls-cert fuzz-peermap

.PHONY: fuzz-attest fuzz-ratls-cert fuzz-peermap

# $(call fuzz_run,NAME): $(FUZZ_DIR)/NAME-fuzz over $$work/corpus for
# FUZZ_SECONDS; exits non-zero on a finding
fuzz_run = cd "$$work" \
    && echo "fuzz-$(1): $$(ls corpus | wc -l) seeds, $(FUZZ_SECONDS) s" \
    && { ASAN_OPTIONS=detect_leaks=1 \
         $(FUZZ_DIR)/$(1)-fuzz -max_total_time=$(FUZZ_SECONDS) \
             -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
             -artifact_prefix=$(FUZZ_DIR)/$(1)- \
             corpus >fuzz.log 2>&1; rc=$$?; } \
    ; tail -8 fuzz.log; [ $$rc = 0 ] \
    || echo "fuzz-$(1): failed, inputs in $(FUZZ_DIR)/$(1)-*"; \
    exit $$rc

$(FUZZ_DIR)/attest-fuzz: fuzz/attest_fuzz.c $(FUZZ_ATTEST_SRCS) \
                         $(FUZZ_ATTEST_HDRS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iratls -o $@ fuzz/attest_fuzz.c \
	    $(FUZZ_ATTEST_SRCS) -lcrypto -ljansson

$(FUZZ_DIR)/ratls-cert-fuzz: fuzz/ratls_cert_fuzz.c $(FUZZ_ATTEST_SRCS) \
                             $(FUZZ_ATTEST_HDRS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iratls -o $@ fuzz/ratls_cert_fuzz.c \
	    $(FUZZ_ATTEST_SRCS) -lcrypto -ljansson

$(FUZZ_DIR)/peermap-fuzz: fuzz/peermap_fuzz.c $(FUZZ_WGCTL_SRCS) \
                          $(wildcard wgctl/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -std=gnu11 -Iwgctl -o $@ fuzz/peermap_fuzz.c \
	    $(FUZZ_WGCTL_SRCS) -lmnl -ljansson -lcrypto

fuzz-attest: $(FUZZ_DIR)/attest-fuzz $(BUILD)/bin/attest-unit
	@work=$$(mktemp -d) && trap 'rm -rf "$$work"' EXIT \
	    && mkdir "$$work/corpus" \
	    && DSTACK_FIXTURES=$${DSTACK_FIXTURES:-$(CURDIR)/t/fixtures} \
	       $(BUILD)/bin/attest-unit --seeds "$$work/corpus" \
	    && $(call fuzz_run,attest)

fuzz-ratls-cert: $(FUZZ_DIR)/ratls-cert-fuzz
	@work=$$(mktemp -d) && trap 'rm -rf "$$work"' EXIT \
	    && cp -r fuzz/corpus/ratls-cert "$$work/corpus" \
	    && $(call fuzz_run,ratls-cert)

fuzz-peermap: $(FUZZ_DIR)/peermap-fuzz
	@work=$$(mktemp -d) && trap 'rm -rf "$$work"' EXIT \
	    && cp -r fuzz/corpus/peermap "$$work/corpus" \
	    && $(call fuzz_run,peermap)
