# wsgate build. `make run` installs what is missing, builds quietly and serves;
# `make test` installs, builds and runs every test.

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -g
SAN     ?=
PKGS    := libuv jansson sqlite3 openssl libcurl libjwt zlib hiredis libzstd
PYTHON  := /usr/bin/python3

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhttp_parser -lm

CFLAGS_ALL  = -std=gnu17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
              -Isrc $(PKG_CFLAGS) $(OPT) $(SAN) -MMD -MP $(CFLAGS)
LDFLAGS_ALL = $(SAN) $(LDFLAGS)

SRCS      := $(shell find src -name '*.c' | sort)
LIB_SRCS  := $(filter-out src/main.c,$(SRCS))
# The browser pages (web/) are embedded by a generated C file per build dir.
WEB_FILES := $(shell find web -type f ! -name '.*' 2>/dev/null | sort)
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/web_assets.o
MAIN_OBJ  := $(BUILD)/obj/src/main.o
LIB       := $(BUILD)/libwsgate.a
BIN       := $(BUILD)/wsgate
LOADGEN   := $(BUILD)/wsgate-loadgen

UNIT_SRCS := $(sort $(wildcard tests/unit/*/*.c))
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))

.SECONDARY:

.PHONY: all deps run test lint unit integration asan tsan tsan-integration format format-check fuzz fuzz-smoke clean bench bench-cluster bench-store-scale profile cluster

all: $(BIN) $(LOADGEN)

deps:
	@./scripts/install-deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# web/ is a prerequisite too so that a removed file regenerates the table.
%/gen/web_assets.c: scripts/embed-web.sh $(WEB_FILES) web
	./scripts/embed-web.sh web $@

$(BUILD)/obj/gen/web_assets.o: $(BUILD)/gen/web_assets.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(MAIN_OBJ) $(LIB)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(PKG_LIBS) -lpthread

$(LOADGEN): bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LDFLAGS_ALL) $(PKG_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(LDFLAGS_ALL) $(PKG_LIBS) -lcriterion -lpthread

# Quiet for people: the build's commands are hidden (-s), its warnings and
# errors are not; `make all` shows every command. ARGS go to `wsgate serve`.
ARGS ?=
run: deps
	@$(MAKE) --no-print-directory -q $(BIN) 2>/dev/null || echo "building $(BIN) ..."
	@$(MAKE) --no-print-directory -s $(BIN)
	@exec $(BIN) serve $(ARGS)

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; \
	  $$t --jobs 2 > $$t.log 2>&1 || { cat $$t.log; exit 1; }; \
	  if grep -q "ERROR: .*Sanitizer\|WARNING: ThreadSanitizer\|runtime error:" $$t.log; then cat $$t.log; echo "$$t: sanitizer report"; exit 1; fi; \
	  grep "Synthesis" $$t.log; done

integration: $(BIN)
	WSGATE_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

test: deps
	@$(MAKE) --no-print-directory format-check
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory all $(UNIT_BINS)
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory tsan-integration

# One C style (.clang-format): `make format` applies it, `make format-check`
# (part of make test) fails on any file that differs from it.
FORMAT_FILES = $(shell git ls-files 'src/*.[ch]' 'tests/unit/*.[ch]' 'tests/fuzz/*.[ch]' 'bench/*.[ch]' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	@clang-format --dry-run -Werror $(FORMAT_FILES) || { echo "format-check: run make format"; exit 1; }

# Issue #17's rules, checked (part of make test): no include from a lower
# layer to a higher one (docs/architecture.md, "Layers"), and no function
# over 80 lines but a parser state machine or a table.
lint:
	@$(PYTHON) scripts/check_layers.py
	@scripts/long_functions.sh --check

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
# (LeakSanitizer included), in its own build directory.
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g" SAN="$(ASAN_FLAGS)" all unit integration

# ThreadSanitizer: the integration tests where threads share state (several
# workers, cross-worker sends, the management API, the store thread) against
# a TSan build of the server. A report makes the server exit non-zero, which
# fails the test that started it. Criterion cannot start under TSan (its
# inheritable arena, Criterion issue #274), so the unit tests, which are
# single-threaded, run in the ordinary build.
TSAN_TESTS := tests/integration/test_workers.py tests/integration/test_api.py \
              tests/integration/test_management.py tests/integration/test_store.py \
              tests/integration/test_integrations.py tests/integration/test_cluster.py
TSAN_ENV := TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(abspath tests/tsan.supp)"
tsan: deps
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory tsan-integration
tsan-integration:
	@$(MAKE) --no-print-directory BUILD=build-tsan OPT="-O1 -g" SAN="-fsanitize=thread" build-tsan/wsgate
	$(TSAN_ENV) WSGATE_BIN=$(abspath build-tsan/wsgate) $(PYTHON) -m pytest -q -p no:cacheprovider $(TSAN_TESTS)

# libFuzzer targets, built with clang: the library once with coverage
# instrumentation, then each target linked against it.
FUZZ_BUILD := build-fuzz
FUZZ_CFLAGS := -std=gnu17 -D_GNU_SOURCE -g -O1 -Isrc $(PKG_CFLAGS) \
               -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
FUZZ_OBJS  := $(LIB_SRCS:%.c=$(FUZZ_BUILD)/obj/%.o) $(FUZZ_BUILD)/obj/gen/web_assets.o
FUZZ_BINS  := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_TIME  ?= 60

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/obj/gen/web_assets.o: $(FUZZ_BUILD)/gen/web_assets.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

$(FUZZ_BUILD)/%: tests/fuzz/%.c $(FUZZ_OBJS)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJS) $(PKG_LIBS) -lpthread

# Runs every fuzzer for FUZZ_TIME seconds on its seed corpus (copied, so the
# committed corpus only grows by hand).
fuzz: deps $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$n; cp -r tests/fuzz/corpus/$$n/. $(FUZZ_BUILD)/corpus/$$n/ 2>/dev/null || true; \
	  dict=""; [ -f tests/fuzz/$$n.dict ] && dict="-dict=tests/fuzz/$$n.dict"; \
	  echo "== $$n for $(FUZZ_TIME)s"; \
	  if ! timeout $$(( $(FUZZ_TIME) + 120 )) $$f $$dict -max_total_time=$(FUZZ_TIME) -timeout=20 \
	       -max_len=70000 -artifact_prefix=$(FUZZ_BUILD)/ \
	       $(FUZZ_BUILD)/corpus/$$n > $(FUZZ_BUILD)/$$n.log 2>&1; then \
	    tail -60 $(FUZZ_BUILD)/$$n.log; echo "fuzzer $$n failed"; exit 1; fi; \
	  grep -E '^(#[0-9]+.*DONE|Done)' $(FUZZ_BUILD)/$$n.log | tail -1; done

# CI's short smoke: every fuzzer replays its seed corpus and runs a few seconds.
fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_TIME=5

# Three nodes and Redis on this machine (docs/redis.md), in the foreground:
# Ctrl-C stops everything; CLUSTER_SHARDS=2 for two Redis shards.
cluster: deps $(BIN)
	@WSGATE_BIN=$(BIN) ./scripts/cluster.sh

bench: deps $(BIN) $(LOADGEN)
	@BUILD=$(BUILD) ./bench/run.sh

# Cross-node fan-out: 3 nodes on one Redis (CF_SHARDS=2: two) against the
# local engine, same run (docs/BENCHMARKS.md); about a minute, not part of
# `make test`.
bench-cluster: deps $(BIN) $(LOADGEN)
	@BUILD=$(BUILD) /usr/bin/python3 ./bench/cluster_fanout.py

# The store grown to 10 million messages with the seed's defaults, a TTL
# sweep of a million expired rows while chats flow, and a restore of the
# whole store (docs/BENCHMARKS.md); about 20 minutes and 5 GB of disk in
# TMPDIR (SCALE_DIR), not part of `make bench`. TARGET, STEP, RATE,
# TTL_ROWS: see the script.
bench-store-scale: $(BIN) $(LOADGEN)
	@/usr/bin/python3 ./bench/store_scale.py $(BIN) $(LOADGEN)

# Instructions per chat and per handshake (valgrind's callgrind), by thread.
profile: deps $(BIN) $(LOADGEN)
	@BUILD=$(BUILD) ./bench/callgrind.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(shell find $(BUILD) $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
