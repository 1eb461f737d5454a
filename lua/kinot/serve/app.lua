-- `kinot serve` inside nginx: one twin per worker over the shared store
-- (the lua_shared_dict kinot_fleet, or Redis with --redis), the verified
-- callback handler feeding it (POST /kinot/callback), the JSON API
-- (kinot.serve.api) reading it, and the reconciliation loop (worker 0 of
-- each host: a sync at start and every sync_interval, a log line each).
-- cli/serve.lua writes the configuration (serve_config.lua, in the
-- server's private prefix: it holds the credentials) and the nginx.conf
-- that loads this.
local ngx = ngx -- luacheck: ignore
local M = {}

local cfg, twin, handler, client, metrics, observe_sync

--- configure(c) (init_by_lua): c = { app_key, app_secret, endpoint,
-- callback_secret, redis, groups, sync_interval, sweep_interval, dtus,
-- api_token, stale_after, weak_signal, concurrency }
function M.configure(c)
  cfg = c
end

local function log(level, ...)
  ngx.log(level, "kinot serve: ", ...)
end

local function sync_once()
  local report, err = twin:sync(client, { dtus = cfg.dtus, concurrency = cfg.concurrency or 4 })
  observe_sync(report, err)
  if not report then
    log(ngx.ERR, "sync failed: ", tostring(err))
    return
  end
  -- the devices left out (no updated_at the twin can order), named: the platform's to put right
  local unordered = ""
  if report.unordered > 0 then
    unordered = "; unordered: " .. table.concat(report.unordered_sns, " ")
      .. (report.unordered > #report.unordered_sns and " ..." or "")
  end
  log(ngx.NOTICE, string.format("sync: %d locks, %d sensors, %d dtus read; %d added, %d missed, %d unordered, " ..
    "%d gone, %d stale, %d changes in %.2f s%s", report.locks, report.sensors, report.dtus, report.added,
    report.missed, report.unordered, report.gone, report.stale, report.changes, report.duration, unordered))
end

local function loop(premature)
  if premature then return end
  local ok, err = pcall(sync_once)
  if not ok then log(ngx.ERR, "sync raised: ", tostring(err)) end
  if cfg.sync_interval and cfg.sync_interval > 0 then
    local ok2, terr = ngx.timer.at(cfg.sync_interval, loop)
    if not ok2 then log(ngx.ERR, "cannot schedule the next sync: ", tostring(terr)) end
  end
end

-- the stale sweep on a timer of its own (a device turns stale with the
-- time, not with a sync): every sweep_interval seconds, worker 0
local function sweep_loop(premature)
  if premature then return end
  local ok, events, err = pcall(twin.sweep, twin)
  if not ok then log(ngx.ERR, "sweep raised: ", tostring(events))
  elseif not events then log(ngx.ERR, "sweep failed: ", tostring(err))
  elseif #events > 0 then log(ngx.NOTICE, string.format("sweep: %d devices turned stale", #events)) end
  local ok2, terr = ngx.timer.at(cfg.sweep_interval, sweep_loop)
  if not ok2 then log(ngx.ERR, "cannot schedule the next sweep: ", tostring(terr)) end
end

--- init_worker(): the twin, the client, the handler; worker 0 syncs and sweeps
function M.init_worker()
  local fleet = require "kinot.fleet"
  twin = fleet.new {
    store = cfg.redis and "redis" or "shared", redis = cfg.redis, redis_tls = cfg.redis_tls, groups = cfg.groups,
    stale_after = cfg.stale_after, weak_signal = cfg.weak_signal,
  }
  -- GET /metrics (docs/metrics.md): the twin's gauges at each scrape, the
  -- syncs, the callbacks and the API calls counted as they come
  metrics = require("kinot.metrics").new { dict = "kinot_serve_metrics" }
  require("kinot.metrics.fleet").register(metrics, twin)
  observe_sync = require("kinot.metrics.fleet").sync(metrics)
  client = require("kinot").new { app_key = cfg.app_key, app_secret = cfg.app_secret, endpoint = cfg.endpoint,
                                  metrics = metrics }
  handler = require("kinot.callback").handler {
    secret = cfg.callback_secret or cfg.app_secret,
    dedupe = "kinot_serve_dedupe",
    fleet = twin, -- each verified status change, before any on_status (kinot.callback.receiver)
    metrics = metrics,
  }
  if ngx.worker.id() == 0 then
    local ok, err = ngx.timer.at(0, loop)
    if not ok then log(ngx.ERR, "cannot start the sync loop: ", tostring(err)) end
    if cfg.sweep_interval and cfg.sweep_interval > 0 and twin.stale_after then
      ok, err = ngx.timer.at(cfg.sweep_interval, sweep_loop)
      if not ok then log(ngx.ERR, "cannot start the sweep: ", tostring(err)) end
    end
  end
end

--- callback(): POST /kinot/callback
function M.callback() return handler() end

--- api(): GET /api/...
function M.api() return require("kinot.serve.api").nginx(twin, { token = cfg.api_token }) end

--- metrics(): GET /metrics, under the JSON API's rule (loopback, else the API token)
function M.metrics() return require("kinot.serve.metrics").nginx(metrics, { token = cfg.api_token }) end

-- the commands' context: the twin, the client, their records' dict, the
-- token; the commands sent are followed by kinot.serve.commands' followers
local commands_ctx
local function commands()
  if commands_ctx then return commands_ctx end
  local mod = require "kinot.serve.commands"
  local ctx = { twin = twin, client = client, dict = ngx.shared.kinot_serve_commands, token = cfg.api_token,
                now = ngx.now }
  ctx.spawn = mod.followers(ctx, mod.FOLLOWERS, function(msg) log(ngx.ERR, msg) end)
  commands_ctx = ctx
  return ctx
end

--- commands(): POST /api/devices/{sn}/commands, GET /api/commands/{id}
function M.commands() return require("kinot.serve.commands").nginx(commands()) end

--- dashboard(): GET /, the page (kinot.serve.dashboard)
function M.dashboard() return require("kinot.serve.dashboard").nginx() end

return M
