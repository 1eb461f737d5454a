# lua-kinot: every entry point a user or CI needs.
#   make deps     install the Debian packages the project needs (only missing ones)
#   make build    build kinot.core for Lua 5.4 and LuaJIT into build/
#   make test     the whole busted suite under Lua 5.4 and LuaJIT (TEST_JOBS=2 busted processes at a time)
#   make check    the fast unit specs (tag #unit: no server, no install) under both runtimes
#   make demo     a simulator with a seeded fleet, a report and a command
#   make bench    the benchmarks of bench/ (each against a named baseline)
#   make screenshots  the docs' pictures of the dashboard (docs/img/), in headless chromium
#   make install  LuaRocks install for LuaJIT, then Lua 5.4 (TREE=/usr/local; TREE=dir for another tree)
#   make uninstall  the same, removed

SHELL := /bin/bash
CC ?= cc
CFLAGS ?= -O2 -g
WARN := -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wshadow -Wstrict-prototypes
PKG_CFLAGS := $(shell pkg-config --cflags libcurl openssl 2>/dev/null)
LIBS := $(shell pkg-config --libs libcurl openssl 2>/dev/null || echo -lcurl -lssl -lcrypto) -lpthread

# the plain C core, then its Lua binding: one file per concern, gathered by
# kinot_core.c (only src/lua_*.c and kinot_core.c include Lua headers)
CORE_C := src/buf.c src/interrupt.c src/digest.c src/sign.c src/headers.c src/http.c src/cbscan.c src/json.c src/jsonlex.c src/jsonwrite.c \
	src/ffi_layout.c
BINDING := src/lua_binding.c src/lua_sign.c src/lua_http.c src/lua_json.c src/lua_callback.c src/lua_util.c \
	src/kinot_core.c
SRC := $(CORE_C) $(BINDING)
# kinot.simsignal: the signals of `kinot sim` in the foreground, beside the core
SIMSIGNAL_SRC := src/lua_simsignal.c src/lua_binding.c
HDR := $(wildcard src/*.h)

LUA54_INC := /usr/include/lua5.4
LUAJIT_INC := /usr/include/luajit-2.1

DEB_PACKAGES := gcc make pkg-config lua5.1 lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev \
	libcurl4-openssl-dev libssl-dev lua-cjson lua-busted lua-socket lua-argparse lua-check \
	luarocks nginx libnginx-mod-http-lua wrk tmux openssl clang libclang-rt-14-dev valgrind python3 \
	dnsmasq-base iproute2 redis-server zsh fish strace lua-sec redis-sentinel \
	prometheus chromium chromium-driver nodejs

.PHONY: rock deps build test check test-54 test-jit lint demo bench clean fuzz sanitize sanitize-gc leakcheck screenshots

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi
	@# playwright-core drives Debian's chromium in the browser specs: from npm's
	@# registry at the version package-lock.json pins; it downloads no browser
	@test -f spec/browser/node_modules/playwright-core/package.json || \
	  npm ci --prefix spec/browser --no-audit --no-fund --loglevel=error >/dev/null

build: build/5.4/kinot/core.so build/5.1/kinot/core.so build/5.4/kinot/simsignal.so build/5.1/kinot/simsignal.so

build/5.4/kinot/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -I$(LUA54_INC) $(PKG_CFLAGS) -o $@ $(SRC) $(LIBS)

build/5.1/kinot/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -I$(LUAJIT_INC) $(PKG_CFLAGS) -o $@ $(SRC) $(LIBS)

build/5.4/kinot/simsignal.so: $(SIMSIGNAL_SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -I$(LUA54_INC) -o $@ $(SIMSIGNAL_SRC)

build/5.1/kinot/simsignal.so: $(SIMSIGNAL_SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -I$(LUAJIT_INC) -o $@ $(SIMSIGNAL_SRC)

# `luarocks make` (the rockspec's build, type make): kinot.core and
# kinot.simsignal for the Lua whose headers LuaRocks names (LUA_INCDIR), from
# the same SRC as `make build`, into build/rock/: on no module path of the
# checkout, and made afresh each time (a 5.1 and a 5.4 build take turns)
ROCK_DIR := build/rock
LIBFLAG ?= -shared
rock:
	@test -n "$(LUA_INCDIR)" || { echo "make rock: LUA_INCDIR (LuaRocks passes it)" >&2; exit 1; }
	@rm -rf $(ROCK_DIR) && mkdir -p $(ROCK_DIR)/kinot
	$(CC) $(CFLAGS) $(WARN) -fPIC $(LIBFLAG) -I$(LUA_INCDIR) -o $(ROCK_DIR)/kinot/core.so $(SRC) \
	  $(if $(CURL_LIBDIR),-L$(CURL_LIBDIR)) $(if $(OPENSSL_LIBDIR),-L$(OPENSSL_LIBDIR)) -lcurl -lcrypto -lpthread
	$(CC) $(CFLAGS) $(WARN) -fPIC $(LIBFLAG) -I$(LUA_INCDIR) -o $(ROCK_DIR)/kinot/simsignal.so $(SIMSIGNAL_SRC)

BUSTED_FLAGS ?=
# make test [TEST_JOBS=n]: every spec file under Lua 5.4 and under LuaJIT,
# n busted processes at a time, one spec file each (spec/support/suite.sh:
# the suite mostly waits on servers and timers); each run's log in
# build/test/test/<runtime>/, a line per file as it ends, then each failed
# file's failures, each runtime's count, and last "N passed, N failed"
# 2, one a core: at 4 the timing specs (deadlines, failovers, workers
# handling within seconds) failed one in two clean-clone runs on this
# 2-core machine, each time another, once the browser, prometheus and
# failover specs joined the suite
TEST_JOBS ?= 2
test: deps build
	@bash spec/support/suite.sh test $(TEST_JOBS) $(BUSTED_FLAGS)

# make check: the specs tagged #unit, and none tagged with what it starts
# or needs (the tags: README, "Tests"); seconds, not minutes
CHECK_TAGS := --tags=unit --exclude-tags=nginx,sim,redis,cli,install,slow,peer,lint,build,fuzz,browser
check: deps build
	@bash spec/support/suite.sh check $(TEST_JOBS) $(CHECK_TAGS) $(BUSTED_FLAGS)

test-54: build
	lua5.4 /usr/bin/busted --cpath='build/5.4/?.so' $(BUSTED_FLAGS)

test-jit: build
	luajit /usr/bin/busted --cpath='build/5.1/?.so' $(BUSTED_FLAGS)

lint:
	luacheck lua bin spec bench examples

demo: deps build
	@bash examples/demo.sh

build/bench/hmac_baseline: bench/hmac_baseline.c
	@mkdir -p $(@D)
	$(CC) -O2 $(WARN) -o $@ $< $(LIBS)

bench: deps build build/bench/hmac_baseline
	lua5.4 bench/sign.lua
	luajit bench/sign.lua
	lua5.4 bench/callback.lua
	luajit bench/callback.lua
	lua5.4 bench/fetch.lua
	luajit bench/fetch.lua
	lua5.4 bench/sim.lua
	lua5.4 bench/scan.lua
	lua5.4 bench/batch.lua
	luajit bench/inbox.lua
	luajit bench/fleet.lua
	luajit bench/metrics.lua

# make screenshots: the pictures of the docs, made in Debian's chromium
# (headless) over `kinot sim` (docs/img/dashboard.png, dashboard-command.png,
# report.png)
screenshots: deps build
	lua5.4 spec/browser/dashboard_screenshot.lua docs/img
	lua5.4 examples/report_screenshot.lua docs/img/report.png

# ---------------------------------------------------------------- reliability
FUZZ_TARGETS := sign cbscan headers json jsonwrite
FUZZ_SECONDS ?= 60
# plain C only: no Lua binding file (src/lua_*.c, kinot_core.c) and no libcurl
FUZZ_CORE := src/buf.c src/digest.c src/sign.c src/headers.c src/cbscan.c src/json.c src/jsonlex.c src/jsonwrite.c

build/fuzz/%_fuzz: fuzz/%_fuzz.c $(FUZZ_CORE) $(HDR)
	@mkdir -p $(@D)
	clang -g -O1 -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=undefined -o $@ $< $(FUZZ_CORE) -lcrypto -lm

build/fuzz/seeds: fuzz/seeds.lua spec/fixtures/*.json
	rm -rf $@ && lua5.4 fuzz/seeds.lua $@

# make fuzz [FUZZ_SECONDS=N]: each target N seconds from the vector seeds
fuzz: deps $(addprefix build/fuzz/,$(addsuffix _fuzz,$(FUZZ_TARGETS))) build/fuzz/seeds
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus-$$t; \
	  echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	  build/fuzz/$${t}_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=build/fuzz/ \
	    build/fuzz/corpus-$$t build/fuzz/seeds/$$t 2>&1 | grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|ERROR|SUMMARY|Done" ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# make sanitize: kinot.core with AddressSanitizer + UBSan.  First the
# callback specs with an eager collector (KINOT_GC_STRESS=1, see
# spec/support/gc_stress.lua) in both runtimes (on LuaJIT that is the FFI
# path), then the whole suite against it as usual.
ASAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
build/asan/5.4/kinot/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	gcc $(ASAN_CFLAGS) $(WARN) -fPIC -shared -I$(LUA54_INC) $(PKG_CFLAGS) -o $@ $(SRC) $(LIBS)
build/asan/5.1/kinot/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	gcc $(ASAN_CFLAGS) $(WARN) -fPIC -shared -I$(LUAJIT_INC) $(PKG_CFLAGS) -o $@ $(SRC) $(LIBS)
build/asan/5.4/kinot/simsignal.so: $(SIMSIGNAL_SRC) $(HDR)
	@mkdir -p $(@D)
	gcc $(ASAN_CFLAGS) $(WARN) -fPIC -shared -I$(LUA54_INC) -o $@ $(SIMSIGNAL_SRC)
build/asan/5.1/kinot/simsignal.so: $(SIMSIGNAL_SRC) $(HDR)
	@mkdir -p $(@D)
	gcc $(ASAN_CFLAGS) $(WARN) -fPIC -shared -I$(LUAJIT_INC) -o $@ $(SIMSIGNAL_SRC)

# Only the Lua processes run under the sanitizers.  The runtimes are
# preloaded by two wrappers, build/asan/bin/lua5.4 and build/asan/bin/luajit
# (first in PATH during the run), together with build/asan/unpreload.so,
# which takes LD_PRELOAD out of the process's environment again: what a
# spec spawns (ps, nginx, openssl, redis-server, a shell) runs plain (`ps`
# under a preloaded libasan never finishes), and a Lua child it starts as
# `lua5.4` or `luajit` finds the wrapper and runs sanitized again.
ASAN_RT := $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)
ASAN_BIN := build/asan/bin
build/asan/unpreload.so: spec/support/asan_unpreload.c
	@mkdir -p $(@D)
	gcc -O1 $(WARN) -fPIC -shared -o $@ $<
# (the real interpreter: the first in PATH that is not a wrapper; and
# LuaRocks, which takes the Lua installation of the first lua5.4 in PATH,
# finds its headers in build/asan/include)
$(ASAN_BIN)/lua5.4 $(ASAN_BIN)/luajit: build/asan/unpreload.so Makefile
	@mkdir -p $(@D) build/asan/include && ln -sfn $(LUA54_INC) build/asan/include/lua5.4
	@real=$$(type -ap $(@F) | grep -v '/$(ASAN_BIN)/' | head -n 1); test -n "$$real" || { echo "$(@F) is missing: run make deps" >&2; exit 1; }; \
	printf '#!/bin/sh\n# made by make (sanitize): %s under ASan + UBSan, see the Makefile\nLD_PRELOAD="%s %s" exec %s "$$@"\n' \
	  "$(@F)" "$(ASAN_RT)" "$(CURDIR)/build/asan/unpreload.so" "$$real" > $@ && chmod +x $@
ASAN_SO := $(foreach v,5.4 5.1,build/asan/$(v)/kinot/core.so build/asan/$(v)/kinot/simsignal.so)
ASAN_TOOLS := $(ASAN_BIN)/lua5.4 $(ASAN_BIN)/luajit
ASAN_ENV := PATH="$(CURDIR)/$(ASAN_BIN):$$PATH" ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
GC_SPECS := spec/callback_seam_spec.lua spec/callback_spec.lua
# make sanitize-gc: only the callback specs under the eager collector
sanitize-gc: deps build $(ASAN_SO) $(ASAN_TOOLS)
	@mkdir -p build/test
	@rc=0; \
	$(ASAN_ENV) KINOT_GC_STRESS=1 lua5.4 /usr/bin/busted --cpath='build/asan/5.4/?.so' --exclude-tags=nosanitize -o plainTerminal $(GC_SPECS) 2>&1 | tee build/test/asan54-gc.log || rc=1; \
	$(ASAN_ENV) KINOT_GC_STRESS=1 luajit /usr/bin/busted --cpath='build/asan/5.1/?.so' --exclude-tags=nosanitize -o plainTerminal $(GC_SPECS) 2>&1 | tee build/test/asanjit-gc.log || rc=1; \
	lua5.4 spec/support/summary.lua build/test/asan54-gc.log build/test/asanjit-gc.log || rc=1; \
	exit $$rc

# The whole suite runs as make test runs it (spec/support/suite.sh: a
# process a spec file): in one process a spec's heap reaches the next (the
# #gc seam spec found no finalizer inside a verification after
# batch_attack_spec's 20 MB journal line).
sanitize: sanitize-gc
	@$(ASAN_ENV) SUITE_CPATH=build/asan bash spec/support/suite.sh sanitize $(TEST_JOBS) --exclude-tags=nosanitize $(BUSTED_FLAGS)

# make leakcheck: 100,000 signed requests and 100,000 verifications; RSS at
# start and end, then the same loop under LeakSanitizer.  The simulator
# runs outside the sanitizer (started here, stopped however this ends).
LEAK_N ?= 100000
leakcheck: deps build build/asan/5.4/kinot/core.so $(ASAN_BIN)/lua5.4
	@pidf=$$(mktemp /tmp/kinot-leak.XXXXXX); trap 'lua5.4 bin/kinot sim stop --pid-file '$$pidf' >/dev/null' EXIT; \
	lua5.4 bin/kinot --json sim --daemon --pid-file $$pidf --locks 50 > build/leak-sim.json && \
	lua5.4 bench/leak.lua $(LEAK_N) build/5.4 build/leak-sim.json && \
	ASAN_OPTIONS=detect_leaks=1 $(ASAN_BIN)/lua5.4 bench/leak.lua $(LEAK_N) build/asan/5.4 build/leak-sim.json && \
	echo "LeakSanitizer: no leak reported"

# ---------------------------------------------------------------- release
.PHONY: install uninstall rockspec build/luarocks/config.lua
# The version is written once, in lua/kinot/version.lua.
VERSION := $(shell sed -n 's/^return "\([^"]*\)".*/\1/p' lua/kinot/version.lua)
ROCKSPEC := kinot-$(VERSION)-1.rockspec
PREFIX ?= /usr/local
TREE ?= $(PREFIX)

# make rockspec: kinot-<version>-1.rockspec from the scm one (spec/version_spec.lua checks they agree)
ROCKSPEC_OUT ?= $(ROCKSPEC)
rockspec:
	@test -n "$(VERSION)" || { echo "no version in lua/kinot/version.lua" >&2; exit 1; }
	@{ echo "-- generated from kinot-scm-1.rockspec by \`make rockspec\`: edit that one"; \
	  sed -e 's/^version = "scm-1"$$/version = "$(VERSION)-1"/' \
	      -e 's/^\(source = { url = "[^"]*"\) }$$/\1, tag = "v$(VERSION)" }/' kinot-scm-1.rockspec; } > $(ROCKSPEC_OUT)
	@grep -q '^version = "$(VERSION)-1"$$' $(ROCKSPEC_OUT) && grep -q 'tag = "v$(VERSION)"' $(ROCKSPEC_OUT) || \
	  { echo "kinot-scm-1.rockspec: no version or source line to rewrite" >&2; rm -f $(ROCKSPEC_OUT); exit 1; }

# LuaRocks config: Debian's trees, plus the Debian packages that stand for
# the rockspec's dependencies (versions from dpkg), so that LuaRocks does not
# call them missing
build/luarocks/config.lua:
	@mkdir -p $(@D)
	@{ echo 'rocks_trees = { home..[[/.luarocks]], [[/usr/local]] }'; \
	  echo 'rocks_provided = {'; \
	  for p in lua-cjson:lua-cjson lua-argparse:argparse; do \
	    v=$$(dpkg-query -W -f='$${Version}' $${p%%:*} 2>/dev/null | sed 's/^[0-9]*://; s/[+~-].*//'); \
	    test -n "$$v" && echo "  [\"$${p#*:}\"] = \"$$v-1\","; \
	  done; echo '}'; } > $@

# make install [TREE=dir]: the LuaJIT (5.1 ABI) build first, then Lua 5.4,
# whose bin/kinot stays; from the versioned rockspec, written afresh from the
# scm one; LuaRocks' build products stay in build/rock (the rockspec)
LUAROCKS_ENV = LUAROCKS_CONFIG=$(CURDIR)/build/luarocks/config.lua
install: deps rockspec build/luarocks/config.lua
	$(LUAROCKS_ENV) luarocks --lua-version=5.1 make --deps-mode=none --tree="$(TREE)" LUA_INCDIR=$(LUAJIT_INC) $(ROCKSPEC)
	@# the LuaJIT install's bin/kinot would be kept as kinot~ by the next one
	@rm -f "$(TREE)/bin/kinot"
	$(LUAROCKS_ENV) luarocks --lua-version=5.4 make --deps-mode=none --tree="$(TREE)" $(ROCKSPEC)

uninstall: build/luarocks/config.lua
	-$(LUAROCKS_ENV) luarocks --lua-version=5.4 remove --tree="$(TREE)" kinot
	-$(LUAROCKS_ENV) luarocks --lua-version=5.1 remove --tree="$(TREE)" kinot
	@rm -f "$(TREE)/bin/kinot~"

clean:
	rm -rf build
