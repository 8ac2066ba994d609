# Bounded libFuzzer runs (`make fuzz` runs every target in FUZZ_TARGETS).
#
#   make fuzz-attest [FUZZ_SECONDS=60]
#
# The seed corpus is generated at run time from t/fixtures (or
# $DSTACK_FIXTURES) into a temporary folder; nothing is committed.  A
# crashing input is kept as $(BUILD)/fuzz/attest-crash-*.

FUZZ_SECONDS     ?= 60
FUZZ_CC          ?= clang
FUZZ_DIR         := $(BUILD)/fuzz
FUZZ_FLAGS       := -g -O1 -fsanitize=fuzzer,address,undefined \
                    -fno-sanitize-recover=undefined
FUZZ_ATTEST_SRCS := ratls/dstack_attest.c ratls/dstack_attest_verify.c \
                    ratls/dstack_ratls.c

FUZZ_TARGETS += fuzz-attest

.PHONY: fuzz-attest

$(FUZZ_DIR)/attest-fuzz: fuzz/attest_fuzz.c $(FUZZ_ATTEST_SRCS) \
                         ratls/dstack_attest.h ratls/dstack_ratls.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Wall -Wextra -Werror -Wno-unused-parameter \
	    -Iratls -o $@ fuzz/attest_fuzz.c $(FUZZ_ATTEST_SRCS) \
	    -lcrypto -ljansson

fuzz-attest: $(FUZZ_DIR)/attest-fuzz $(BUILD)/bin/attest-unit
	@work=$$(mktemp -d) && trap 'rm -rf "$$work"' EXIT \
	    && mkdir "$$work/corpus" \
	    && DSTACK_FIXTURES=$${DSTACK_FIXTURES:-$(CURDIR)/t/fixtures} \
	       $(BUILD)/bin/attest-unit --seeds "$$work/corpus" \
	    ; echo "fuzz-attest: $$(ls "$$work/corpus" | wc -l) seeds," \
	           "$(FUZZ_SECONDS) s" \
	    && cd "$$work" \
	    && { ASAN_OPTIONS=detect_leaks=1 \
	         $(FUZZ_DIR)/attest-fuzz -max_total_time=$(FUZZ_SECONDS) \
	             -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
	             -artifact_prefix=$(FUZZ_DIR)/attest- \
	             corpus >fuzz.log 2>&1; rc=$$?; } \
	    ; tail -8 fuzz.log; [ $$rc = 0 ] \
	    || echo "fuzz-attest: failed, inputs in $(FUZZ_DIR)/attest-*"; \
	    exit $$rc
