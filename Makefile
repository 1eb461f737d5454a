# lua-kinot: every entry point a user or CI needs.
#   make deps     install the Debian packages the project needs (only missing ones)
#   make build    build kinot.core for Lua 5.4 and LuaJIT into build/
#   make test     the whole busted suite under Lua 5.4 and LuaJIT
#   make demo     a simulator with a seeded fleet, a report and a command
#   make bench    the benchmarks of bench/ (each against a named baseline)

SHELL := /bin/bash
CC ?= cc
CFLAGS ?= -O2 -g
WARN := -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wshadow -Wstrict-prototypes
PKG_CFLAGS := $(shell pkg-config --cflags libcurl openssl 2>/dev/null)
LIBS := $(shell pkg-config --libs libcurl openssl 2>/dev/null || echo -lcurl -lssl -lcrypto) -lpthread

SRC := src/buf.c src/digest.c src/sign.c src/headers.c src/http.c src/cbscan.c src/jsonfix.c src/kinot_core.c
HDR := $(wildcard src/*.h)

LUA54_INC := /usr/include/lua5.4
LUAJIT_INC := /usr/include/luajit-2.1

DEB_PACKAGES := gcc make pkg-config lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev \
	libcurl4-openssl-dev libssl-dev lua-cjson lua-busted lua-socket lua-argparse lua-check \
	luarocks nginx libnginx-mod-http-lua wrk tmux

.PHONY: deps build test test-54 test-jit lint demo bench clean rock-check

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi

build: build/5.4/kinot/core.so build/5.1/kinot/core.so

build/5.4/kinot/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -I$(LUA54_INC) $(PKG_CFLAGS) -o $@ $(SRC) $(LIBS)

build/5.1/kinot/core.so: $(SRC) $(HDR)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WARN) -fPIC -shared -I$(LUAJIT_INC) $(PKG_CFLAGS) -o $@ $(SRC) $(LIBS)

BUSTED_FLAGS ?=
# Each runtime writes its own log; the summary sums both.
test: deps build
	@mkdir -p build/test
	@rc=0; \
	lua5.4 /usr/bin/busted --cpath='build/5.4/?.so' -o plainTerminal $(BUSTED_FLAGS) 2>&1 | tee build/test/lua54.log || rc=1; \
	luajit /usr/bin/busted --cpath='build/5.1/?.so' -o plainTerminal $(BUSTED_FLAGS) 2>&1 | tee build/test/luajit.log || rc=1; \
	lua5.4 spec/support/summary.lua build/test/lua54.log build/test/luajit.log || rc=1; \
	exit $$rc

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
	lua5.4 bench/scan.lua

clean:
	rm -rf build
