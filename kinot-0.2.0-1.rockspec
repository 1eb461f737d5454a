-- generated from kinot-scm-1.rockspec by `make rockspec`: edit that one
rockspec_format = "3.0"
package = "kinot"
version = "0.2.0-1"
-- PLACEHOLDER: lua-kinot has no public git host yet; example.invalid stands
-- for it.  kinot-<version>-1.rockspec is generated from this file (`make
-- rockspec`) and takes this URL with the tag v<version>.
source = { url = "git+https://example.invalid/lua-kinot.git", tag = "v0.2.0" }
description = {
  summary = "Lua SDK for the Kinot open platform (LoRa parking locks, sensors, DTUs)",
  detailed = [[
    A C core (request signing over OpenSSL, HTTP over libcurl, callback
    verification) with a Lua API, a local platform simulator, an OpenResty
    callback receiver and the `kinot` command line.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
  "argparse",
}
-- by library only: Debian keeps curl/curl.h under the multiarch include dir,
-- which the compiler searches by itself
external_dependencies = {
  CURL = { library = "curl" },
  OPENSSL = { library = "crypto" },
}
build = {
  type = "builtin",
  modules = {
    ["kinot.core"] = {
      sources = { "src/buf.c", "src/digest.c", "src/sign.c", "src/headers.c", "src/http.c",
                  "src/cbscan.c", "src/json.c", "src/jsonlex.c", "src/ffi_layout.c",
                  "src/lua_binding.c", "src/lua_sign.c", "src/lua_http.c", "src/lua_json.c",
                  "src/lua_callback.c", "src/lua_util.c", "src/kinot_core.c" },
      defines = { "_POSIX_C_SOURCE=200809L" },
      libraries = { "curl", "crypto", "pthread" },
      libdirs = { "$(CURL_LIBDIR)", "$(OPENSSL_LIBDIR)" },
    },
    -- the signals of `kinot sim` in the foreground, apart from the SDK's core
    ["kinot.simsignal"] = {
      sources = { "src/lua_simsignal.c", "src/lua_binding.c" },
      defines = { "_POSIX_C_SOURCE=200809L" },
    },
    ["kinot"] = "lua/kinot/init.lua",
    ["kinot.client"] = "lua/kinot/client.lua",
    ["kinot.calendar"] = "lua/kinot/calendar.lua",
    ["kinot.callback"] = "lua/kinot/callback/init.lua",
    ["kinot.callback.event"] = "lua/kinot/callback/event.lua",
    ["kinot.callback.handler"] = "lua/kinot/callback/handler.lua",
    ["kinot.callback.recent"] = "lua/kinot/callback/recent.lua",
    ["kinot.callback.freshness"] = "lua/kinot/callback/freshness.lua",
    ["kinot.callback.rules"] = "lua/kinot/callback/rules.lua",
    ["kinot.callback.scanner"] = "lua/kinot/callback/scanner.lua",
    ["kinot.callback.receiver"] = "lua/kinot/callback/receiver.lua",
    ["kinot.callback.stores"] = "lua/kinot/callback/stores.lua",
    ["kinot.callback.dict_store"] = "lua/kinot/callback/dict_store.lua",
    ["kinot.callback.memory_store"] = "lua/kinot/callback/memory_store.lua",
    ["kinot.callback.redis_store"] = "lua/kinot/callback/redis_store.lua",
    ["kinot.callback.inbox"] = "lua/kinot/callback/inbox.lua",
    ["kinot.callback.worker"] = "lua/kinot/callback/worker.lua",
    ["kinot.redis"] = "lua/kinot/redis.lua",
    ["kinot.cli"] = "lua/kinot/cli/init.lua",
    ["kinot.cli.output"] = "lua/kinot/cli/output.lua",
    ["kinot.cli.report"] = "lua/kinot/cli/report.lua",
    ["kinot.cli.sim"] = "lua/kinot/cli/sim.lua",
    ["kinot.cli.worker"] = "lua/kinot/cli/worker.lua",
    ["kinot.errors"] = "lua/kinot/errors.lua",
    ["kinot.json"] = "lua/kinot/json.lua",
    ["kinot.pager"] = "lua/kinot/pager.lua",
    ["kinot.request"] = "lua/kinot/request/init.lua",
    ["kinot.request.build"] = "lua/kinot/request/build.lua",
    ["kinot.request.classify"] = "lua/kinot/request/classify.lua",
    ["kinot.request.retry"] = "lua/kinot/request/retry.lua",
    ["kinot.redact"] = "lua/kinot/redact.lua",
    ["kinot.signer"] = "lua/kinot/signer.lua",
    ["kinot.native"] = "lua/kinot/native.lua",
    ["kinot.validate"] = "lua/kinot/validate.lua",
    ["kinot.vocabulary"] = "lua/kinot/vocabulary.lua",
    ["kinot.typed"] = "lua/kinot/typed.lua",
    ["kinot.version"] = "lua/kinot/version.lua",
    ["kinot.transport"] = "lua/kinot/transport/init.lua",
    ["kinot.transport.curl"] = "lua/kinot/transport/curl.lua",
    ["kinot.transport.resty"] = "lua/kinot/transport/resty.lua",
    ["kinot.transport.dns"] = "lua/kinot/transport/dns.lua",
    ["kinot.sim.fleet"] = "lua/kinot/sim/fleet.lua",
    ["kinot.sim.gateway"] = "lua/kinot/sim/gateway.lua",
    ["kinot.sim.launcher"] = "lua/kinot/sim/launcher.lua",
    ["kinot.sim.server"] = "lua/kinot/sim/server.lua",
  },
  install = {
    bin = { kinot = "bin/kinot" },
  },
}
-- `luarocks test` in a checkout: the busted suite under the runtime LuaRocks
-- was asked for (LuaJIT for 5.1), offline, with Debian's busted (LuaRocks'
-- own busted test type insists on a busted rock from the network)
test = {
  type = "command",
  script = "spec/support/luarocks_test.lua",
}
