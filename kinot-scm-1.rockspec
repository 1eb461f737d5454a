rockspec_format = "3.0"
package = "kinot"
version = "scm-1"
-- PLACEHOLDER: lua-kinot has no public git host yet; example.invalid stands
-- for it.  kinot-<version>-1.rockspec is generated from this file (`make
-- rockspec`) and takes this URL with the tag v<version>.
source = { url = "git+https://example.invalid/lua-kinot.git" }
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
-- The C core is built by the Makefile's `rock` target (the one list of its
-- sources: `make build` compiles the same), for the Lua whose headers LuaRocks
-- names, into build/rock/: on no module path of the checkout.  (LuaRocks'
-- builtin build wrote ./kinot/core.so, which a Lua of another ABI run from the
-- checkout then found first on ./?.so and failed on: "undefined symbol".)
build = {
  type = "make",
  build_target = "rock",
  build_variables = {
    CFLAGS = "$(CFLAGS)", LIBFLAG = "$(LIBFLAG)", LUA_INCDIR = "$(LUA_INCDIR)",
    CURL_LIBDIR = "$(CURL_LIBDIR)", OPENSSL_LIBDIR = "$(OPENSSL_LIBDIR)",
  },
  install_pass = false,
  install = {
    lib = {
      ["kinot.core"] = "build/rock/kinot/core.so",
      -- the signals of `kinot sim` in the foreground, apart from the SDK's core
      ["kinot.simsignal"] = "build/rock/kinot/simsignal.so",
    },
    -- (a package's init.lua as <name>.init: installed as <name>/init.lua)
    lua = {
      ["kinot.batch.init"] = "lua/kinot/batch/init.lua",
      ["kinot.batch.journal"] = "lua/kinot/batch/journal.lua",
      ["kinot.calendar"] = "lua/kinot/calendar.lua",
      ["kinot.callback.dict_store"] = "lua/kinot/callback/dict_store.lua",
      ["kinot.callback.event"] = "lua/kinot/callback/event.lua",
      ["kinot.callback.freshness"] = "lua/kinot/callback/freshness.lua",
      ["kinot.callback.handler"] = "lua/kinot/callback/handler.lua",
      ["kinot.callback.inbox"] = "lua/kinot/callback/inbox.lua",
      ["kinot.callback.init"] = "lua/kinot/callback/init.lua",
      ["kinot.callback.memory_store"] = "lua/kinot/callback/memory_store.lua",
      ["kinot.callback.receiver"] = "lua/kinot/callback/receiver.lua",
      ["kinot.callback.recent"] = "lua/kinot/callback/recent.lua",
      ["kinot.callback.redis_store"] = "lua/kinot/callback/redis_store.lua",
      ["kinot.callback.rules"] = "lua/kinot/callback/rules.lua",
      ["kinot.callback.scanner"] = "lua/kinot/callback/scanner.lua",
      ["kinot.callback.stores"] = "lua/kinot/callback/stores.lua",
      ["kinot.callback.worker"] = "lua/kinot/callback/worker.lua",
      ["kinot.cli.batch"] = "lua/kinot/cli/batch.lua",
      ["kinot.cli.fleet"] = "lua/kinot/cli/fleet.lua",
      ["kinot.cli.init"] = "lua/kinot/cli/init.lua",
      ["kinot.cli.output"] = "lua/kinot/cli/output.lua",
      ["kinot.cli.pidfile"] = "lua/kinot/cli/pidfile.lua",
      ["kinot.cli.redis_tls"] = "lua/kinot/cli/redis_tls.lua",
      ["kinot.cli.report"] = "lua/kinot/cli/report.lua",
      ["kinot.cli.serve"] = "lua/kinot/cli/serve.lua",
      ["kinot.cli.sim"] = "lua/kinot/cli/sim.lua",
      ["kinot.cli.worker"] = "lua/kinot/cli/worker.lua",
      ["kinot.client"] = "lua/kinot/client.lua",
      ["kinot.core_loader"] = "lua/kinot/core_loader.lua",
      ["kinot.errors"] = "lua/kinot/errors.lua",
      ["kinot.file"] = "lua/kinot/file.lua",
      ["kinot.fleet.groups"] = "lua/kinot/fleet/groups.lua",
      ["kinot.fleet.init"] = "lua/kinot/fleet/init.lua",
      ["kinot.fleet.local_store"] = "lua/kinot/fleet/local_store.lua",
      ["kinot.fleet.redis_store"] = "lua/kinot/fleet/redis_store.lua",
      ["kinot.fleet.rule"] = "lua/kinot/fleet/rule.lua",
      ["kinot.fleet.sync"] = "lua/kinot/fleet/sync.lua",
      ["kinot.init"] = "lua/kinot/init.lua",
      ["kinot.json"] = "lua/kinot/json.lua",
      ["kinot.native"] = "lua/kinot/native.lua",
      ["kinot.pager"] = "lua/kinot/pager.lua",
      ["kinot.redact"] = "lua/kinot/redact.lua",
      ["kinot.redis"] = "lua/kinot/redis.lua",
      ["kinot.report.escape"] = "lua/kinot/report/escape.lua",
      ["kinot.report.html"] = "lua/kinot/report/html.lua",
      ["kinot.report.svg"] = "lua/kinot/report/svg.lua",
      ["kinot.redis_sentinel"] = "lua/kinot/redis_sentinel.lua",
      ["kinot.request.build"] = "lua/kinot/request/build.lua",
      ["kinot.request.classify"] = "lua/kinot/request/classify.lua",
      ["kinot.request.init"] = "lua/kinot/request/init.lua",
      ["kinot.request.retry"] = "lua/kinot/request/retry.lua",
      ["kinot.metrics"] = "lua/kinot/metrics/init.lua",
      ["kinot.metrics.api"] = "lua/kinot/metrics/api.lua",
      ["kinot.metrics.callback"] = "lua/kinot/metrics/callback.lua",
      ["kinot.metrics.fleet"] = "lua/kinot/metrics/fleet.lua",
      ["kinot.serve.api"] = "lua/kinot/serve/api.lua",
      ["kinot.serve.app"] = "lua/kinot/serve/app.lua",
      ["kinot.serve.metrics"] = "lua/kinot/serve/metrics.lua",
      ["kinot.serve.commands"] = "lua/kinot/serve/commands.lua",
      ["kinot.serve.dashboard"] = "lua/kinot/serve/dashboard.lua",
      ["kinot.signer"] = "lua/kinot/signer.lua",
      ["kinot.sim.fleet"] = "lua/kinot/sim/fleet.lua",
      ["kinot.sim.gateway"] = "lua/kinot/sim/gateway.lua",
      ["kinot.sim.launcher"] = "lua/kinot/sim/launcher.lua",
      ["kinot.sim.server"] = "lua/kinot/sim/server.lua",
      ["kinot.transport.curl"] = "lua/kinot/transport/curl.lua",
      ["kinot.transport.dns"] = "lua/kinot/transport/dns.lua",
      ["kinot.transport.init"] = "lua/kinot/transport/init.lua",
      ["kinot.transport.resty"] = "lua/kinot/transport/resty.lua",
      ["kinot.typed"] = "lua/kinot/typed.lua",
      ["kinot.validate"] = "lua/kinot/validate.lua",
      ["kinot.version"] = "lua/kinot/version.lua",
      ["kinot.vocabulary"] = "lua/kinot/vocabulary.lua",
    },
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
