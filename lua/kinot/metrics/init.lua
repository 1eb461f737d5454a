-- Prometheus metrics (docs/metrics.md): counters, gauges and histograms,
-- rendered in the text exposition format 0.0.4.
--
--   local metrics = require "kinot.metrics"
--   local m = metrics.new { dict = "kinot_metrics" }   -- init_worker_by_lua; store = "table" in a script
--   local refused = m:counter("kinot_callbacks_refused_total", "Callbacks refused", { "reason" })
--   refused:inc(1, "bad_sign")
--   ngx.print(m:render())                              -- content_by_lua: GET /metrics
--
-- Inside nginx the values live in a lua_shared_dict (every worker's, one
-- total).  An increment only adds to a table of this worker (the hot path:
-- no lock, no shared memory); a timer adds that table to the dict every
-- flush_interval seconds, and a scrape first adds its own worker's, so a
-- count lags another worker's by flush_interval at most.  The dict is
-- never asked to evict: a new series is added with safe_add, a gauge set
-- with safe_set, and when the dict is full what could not be written stays
-- in the worker's table (written once there is room) and the error is
-- logged once per worker.  A full dict never reaches the caller of inc.
--
-- Outside nginx (store = "table") the same code runs over a Lua table.
local errors = require "kinot.errors"
local validate = require "kinot.validate"

local M = {}

M.DICT = "kinot_metrics"
M.FLUSH_INTERVAL = 1
-- seconds: from 1 ms to 10 s
M.BUCKETS = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
-- distinct label sets one metric takes at most (a label fed something
-- unbounded by mistake must not fill the dict): beyond it, inc is dropped
M.MAX_SERIES = 1000
M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

local type, tostring, pairs, ipairs, format, concat, sort = type, tostring, pairs, ipairs, string.format, table.concat,
  table.sort
local floor, huge, tonumber, next, pcall, getmetatable = math.floor, math.huge, tonumber, next, pcall, getmetatable
local misuse = errors.misuse

local SEP = "\1" -- a key: name SEP label text [SEP part]; no name or escaped label holds \1

-- ------------------------------------------------------------ the store

-- a lua_shared_dict's few operations over a plain table (store = "table")
local TableDict = {}
TableDict.__index = TableDict
local function table_dict() return setmetatable({ v = {} }, TableDict) end
function TableDict:incr(k, n)
  local v = self.v[k]
  if v == nil then return nil, "not found" end
  v = v + n
  self.v[k] = v
  return v
end
function TableDict:safe_add(k, n)
  if self.v[k] ~= nil then return false, "exists" end
  self.v[k] = n
  return true
end
function TableDict:safe_set(k, n)
  self.v[k] = n
  return true
end
function TableDict:get(k) return self.v[k] end
function TableDict:delete(k) self.v[k] = nil end
function TableDict:get_keys()
  local out = {}
  for k in pairs(self.v) do out[#out + 1] = k end
  return out
end

-- ------------------------------------------------------------ text

-- (\1 parts a key in the store: a value holding one shows "?" there)
local function escape_label(v)
  return (tostring(v):gsub("[\\\n\"\1]", { ["\\"] = "\\\\", ["\n"] = "\\n", ['"'] = '\\"', ["\1"] = "?" }))
end
M.escape_label = escape_label

local function escape_help(v)
  return (v:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

local function number_text(v)
  if v ~= v then return "NaN" end
  if v == huge then return "+Inf" end
  if v == -huge then return "-Inf" end
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
  -- 15 digits where they say the same number (0.1, not 0.10000000000000001),
  -- else 17: a count past 2^53 or a sum as the dict holds it, every digit
  local text = format("%.15g", v)
  if tonumber(text) ~= v then text = format("%.17g", v) end
  return text
end
M.number_text = number_text

-- 'a="x",b="y"' of the label names and values
local function label_text(names, values)
  local parts = {}
  for i = 1, #names do parts[i] = names[i] .. '="' .. escape_label(values[i]) .. '"' end
  return concat(parts, ",")
end

-- ------------------------------------------------------------ metrics

local Metric = {}
Metric.__index = Metric

-- claim(metric, labels) -> may the label set be kept: the cap holds in the
-- dict, across every worker and reload (a worker's own count alone let each
-- worker, and each reload, add MAX_SERIES more).  "#s" SEP name SEP labels
-- marks a label set held, "#n" SEP name counts them ("#" starts no metric
-- name: render skips them).  A dict too full for the mark: the label set is
-- kept unmarked (its counts wait in the worker as any other's).
local function claim(self, labels)
  local dict = self.registry.dict
  if not dict:safe_add("#s" .. SEP .. self.name .. SEP .. labels, 1) then
    return true -- "exists": marked by another registry; else no room for the mark
  end
  local key = "#n" .. SEP .. self.name
  local n, err = dict:incr(key, 1)
  if not n and err == "not found" then
    local ok, aerr = dict:safe_add(key, 1)
    if ok then n = 1 elseif aerr == "exists" then n = dict:incr(key, 1) end
  end
  if not n then return true end
  if n > M.MAX_SERIES then
    dict:incr(key, -1)
    dict:delete("#s" .. SEP .. self.name .. SEP .. labels)
    return false
  end
  return true
end

-- the keys of a label set (cached: the hot path builds no string), nil
-- past MAX_SERIES.  A metric's part keys: {""} (a counter, a gauge) or
-- the buckets', then "sum" (a histogram)
local function keys_of(self, a, b)
  local n = self.nlabels
  local cache = self.cache
  if n == 0 then return cache end
  local at = cache[a]
  if n == 2 and at then at = at[b] end
  if at then return at end
  if a == nil or (n == 2 and b == nil) then misuse(self.name .. " needs " .. n .. " label value(s)") end
  local labels = label_text(self.labels, { a, b })
  if self.series >= M.MAX_SERIES or not claim(self, labels) then
    self.registry:once("metric " .. self.name .. " has " .. M.MAX_SERIES .. " label sets: more are dropped")
    return nil
  end
  local keys = self:make_keys(labels)
  self.series = self.series + 1
  if n == 1 then cache[a] = keys
  else
    cache[a] = cache[a] or {}
    cache[a][b] = keys
  end
  return keys
end

local function plain_keys(self, labels)
  return { self.name .. SEP .. labels }
end

local function histogram_keys(self, labels)
  local keys = {}
  local base = self.name .. SEP .. labels .. SEP
  for i = 1, #self.buckets + 1 do keys[i] = base .. i end
  keys.sum = base .. "sum"
  return keys
end

--- counter:inc([n = 1], label values...): n >= 0 (a counter never moves
-- down, and a NaN or an infinity would stay in it for ever: misuse)
function Metric:inc(n, a, b)
  if n ~= nil and (type(n) ~= "number" or not (n >= 0 and n < huge)) then
    misuse("kinot.metrics: " .. self.name .. ":inc needs a finite number >= 0 (got " .. tostring(n) .. ")")
  end
  local keys = keys_of(self, a, b)
  if not keys then return end
  local buf = self.buf
  local k = keys[1]
  buf[k] = (buf[k] or 0) + (n or 1)
  local reg = self.registry
  if not reg.timer then reg:start_timer() end
end

--- gauge:set(v, label values...): written to the store at once (also a
-- counter's, when the count is kept elsewhere: the twin's updates)
function Metric:set(v, a, b)
  if self.kind == "histogram" then misuse("kinot.metrics: " .. self.name .. " is a histogram: observe it") end
  local keys = keys_of(self, a, b)
  if not keys then return end
  local ok, err = self.registry.dict:safe_set(keys[1], v)
  if not ok then self.registry:once("cannot set " .. self.name .. ": " .. tostring(err)) end
end

--- histogram:observe(v, label values...): a NaN or an infinity (a clock
-- gone wrong) is dropped, logged once: in the sum it would stay for ever
function Metric:observe(v, a, b)
  if type(v) ~= "number" then misuse("kinot.metrics: " .. self.name .. ":observe needs a number (got " ..
    type(v) .. ")") end
  if v ~= v or v == huge or v == -huge then
    self.registry:once("metric " .. self.name .. " was given " .. tostring(v) .. ": dropped")
    return
  end
  local keys = keys_of(self, a, b)
  if not keys then return end
  local bounds = self.buckets
  local i, n = 1, #bounds
  while i <= n and v > bounds[i] do i = i + 1 end
  local buf = self.buf
  local k = keys[i]
  buf[k] = (buf[k] or 0) + 1
  k = keys.sum
  buf[k] = (buf[k] or 0) + v
  local reg = self.registry
  if not reg.timer then reg:start_timer() end
end

-- ------------------------------------------------------------ the registry

local Registry = {}
Registry.__index = Registry
M.Registry = Registry

local KNOWN = validate.set { "store", "dict", "flush_interval" }

--- new{store = "shared" (inside nginx) | "table", dict = "kinot_metrics"
-- (a lua_shared_dict's name), flush_interval = 1} -> registry
function M.new(opts)
  local o = validate.options(opts or {}, KNOWN, "kinot.metrics.new")
  local ngx = rawget(_G, "ngx")
  local store = o.store or ((ngx and ngx.shared) and "shared" or "table")
  local dict, timer
  if store == "table" then
    dict, timer = table_dict(), "none"
  elseif store == "shared" then
    local name = o.dict or M.DICT
    dict = ngx and ngx.shared and ngx.shared[name]
    if not dict then misuse("kinot.metrics: nginx.conf declares no lua_shared_dict " .. tostring(name)) end
  else
    misuse('kinot.metrics: store must be "shared" or "table" (got ' .. tostring(store) .. ")")
  end
  local interval = o.flush_interval or M.FLUSH_INTERVAL
  if type(interval) ~= "number" or not (interval > 0 and interval < huge) then
    misuse("kinot.metrics: flush_interval must be a number of seconds > 0")
  end
  return setmetatable({ dict = dict, buf = {}, metrics = {}, names = {}, collectors = {}, timer = timer,
                        interval = interval, logged = {} }, Registry)
end

--- check(v, where) -> v: a registry made by new(), else misuse naming where it was given
function M.check(v, where)
  if getmetatable(v) ~= Registry then
    misuse(where .. ": metrics must be a registry made by kinot.metrics.new (got " .. type(v) .. ")")
  end
  return v
end

-- an error logged once per worker (a full dict would say so at every flush)
function Registry:once(msg)
  if self.logged[msg] then return end
  self.logged[msg] = true
  local ngx = rawget(_G, "ngx")
  if ngx and ngx.log then ngx.log(ngx.ERR, "kinot metrics: ", msg) end
end

--- flush(): adds this worker's increments to the store
function Registry:flush()
  local dict, buf = self.dict, self.buf
  for k, v in pairs(buf) do
    local ok, err = dict:incr(k, v)
    if not ok and err == "not found" then
      ok, err = dict:safe_add(k, v)
      if not ok and err == "exists" then ok, err = dict:incr(k, v) end -- another worker added it meanwhile
    end
    if ok then buf[k] = nil -- (a field set to nil during pairs: allowed)
    else self:once("the lua_shared_dict is full, counts wait in the worker (" .. tostring(err) .. ")") end
  end
end

-- the flush timer: started by the first increment (not in init_by_lua).
-- A worker told to exit (nginx reloaded or stopped gracefully) runs it once
-- more, premature: it flushes and forgets the timer, so that an increment
-- made after (a request still running) flushes at once, here: nothing
-- buffered is left behind by a graceful exit.  A worker killed (SIGKILL,
-- a crash) loses what it buffered: flush_interval's worth at most.
function Registry:start_timer()
  local ngx = rawget(_G, "ngx")
  if not (ngx and ngx.timer and ngx.get_phase) or ngx.get_phase() == "init" then return end
  if ngx.worker and ngx.worker.exiting and ngx.worker.exiting() then
    self:flush()
    return
  end
  self.timer = "starting"
  local ok, err = ngx.timer.every(self.interval, function(premature)
    self:flush()
    if premature then self.timer = nil end
  end)
  if ok then self.timer = "running"
  else
    self.timer = nil
    self:once("cannot start the flush timer: " .. tostring(err))
  end
end

local NAME = "^[a-zA-Z_:][a-zA-Z0-9_:]*$"
local LABEL = "^[a-zA-Z_][a-zA-Z0-9_]*$"

local function register(self, kind, name, help, labels, extra)
  if type(name) ~= "string" or not name:match(NAME) then misuse("kinot.metrics: a metric name is wanted (got " ..
    tostring(name) .. ")") end
  if type(help) ~= "string" then misuse("kinot.metrics: " .. name .. " needs a help text") end
  labels = labels or {}
  if #labels > 2 then misuse("kinot.metrics: " .. name .. ": at most 2 labels") end
  for _, l in ipairs(labels) do
    if type(l) ~= "string" or not l:match(LABEL) or l:sub(1, 2) == "__" or (kind == "histogram" and l == "le") then
      misuse("kinot.metrics: " .. name .. ": bad label name " .. tostring(l))
    end
  end
  local old = self.metrics[name]
  if old then
    if old.kind ~= kind then misuse("kinot.metrics: " .. name .. " is already a " .. old.kind) end
    return old -- the same metric asked for twice (two handlers of one registry)
  end
  local m = setmetatable({ registry = self, kind = kind, name = name, help = help, labels = labels,
                           nlabels = #labels, series = 0, buf = self.buf,
                           make_keys = kind == "histogram" and histogram_keys or plain_keys }, Metric)
  if extra then for k, v in pairs(extra) do m[k] = v end end
  m.cache = m.nlabels == 0 and m:make_keys("") or {}
  self.metrics[name] = m
  self.names[#self.names + 1] = name
  sort(self.names)
  return m
end

--- counter(name, help, labels) -> counter (:inc(n, values...)); a name ends in _total
function Registry:counter(name, help, labels) return register(self, "counter", name, help, labels) end

--- gauge(name, help, labels) -> gauge (:set(v, values...))
function Registry:gauge(name, help, labels) return register(self, "gauge", name, help, labels) end

--- histogram(name, help, labels, buckets = M.BUCKETS) -> histogram (:observe(v, values...))
function Registry:histogram(name, help, labels, buckets)
  buckets = buckets or M.BUCKETS
  for i = 1, #buckets do
    if type(buckets[i]) ~= "number" or (i > 1 and buckets[i] <= buckets[i - 1]) then
      misuse("kinot.metrics: " .. tostring(name) .. ": buckets must be increasing numbers")
    end
  end
  return register(self, "histogram", name, help, labels, { buckets = buckets })
end

--- on_scrape(fn): fn(registry) runs before each render (gauges read from elsewhere)
function Registry:on_scrape(fn)
  if type(fn) ~= "function" then misuse("kinot.metrics: on_scrape needs a function") end
  self.collectors[#self.collectors + 1] = fn
end

-- the store's series of each metric: name -> label text -> value (a
-- counter's, a gauge's) or { [i] = bucket count, sum = ... }
local function read_all(self)
  local dict = self.dict
  local out = {}
  for _, k in ipairs(dict:get_keys(0)) do
    local name, labels, part = k:match("^([^\1]+)\1([^\1]*)\1?([^\1]*)$")
    local m = name and self.metrics[name]
    local v = m and dict:get(k)
    if v then
      local series = out[name]
      if not series then series = {} out[name] = series end
      if m.kind == "histogram" then
        local h = series[labels]
        if not h then h = { sum = 0 } series[labels] = h end
        if part == "sum" then h.sum = v else h[tonumber(part)] = v end
      else
        series[labels] = v
      end
    end
  end
  return out
end

local function braces(labels, extra)
  if labels == "" then return extra and ("{" .. extra .. "}") or "" end
  return "{" .. labels .. (extra and ("," .. extra) or "") .. "}"
end

--- render() -> the exposition text (format 0.0.4)
function Registry:render()
  for _, fn in ipairs(self.collectors) do
    local ok, err = pcall(fn, self)
    if not ok then self:once("a scrape collector failed: " .. tostring(err)) end
  end
  self:flush()
  local all = read_all(self)
  local out, n = {}, 0
  local function put(s)
    n = n + 1
    out[n] = s
  end
  for _, name in ipairs(self.names) do
    local m = self.metrics[name]
    put("# HELP " .. name .. " " .. escape_help(m.help) .. "\n# TYPE " .. name .. " " .. m.kind .. "\n")
    local series = all[name] or {}
    if m.nlabels == 0 and next(series) == nil and m.kind ~= "gauge" then
      series[""] = m.kind == "histogram" and { sum = 0 } or 0 -- a count that never moved is 0
    end
    local order = {}
    for labels in pairs(series) do order[#order + 1] = labels end
    sort(order)
    for _, labels in ipairs(order) do
      local v = series[labels]
      if m.kind ~= "histogram" then
        put(name .. braces(labels) .. " " .. number_text(v) .. "\n")
      else
        local total = 0
        local bounds = m.buckets
        for i = 1, #bounds + 1 do
          total = total + (v[i] or 0)
          local le = i <= #bounds and number_text(bounds[i]) or "+Inf"
          put(name .. "_bucket" .. braces(labels, 'le="' .. le .. '"') .. " " .. number_text(total) .. "\n")
        end
        put(name .. "_sum" .. braces(labels) .. " " .. number_text(v.sum) .. "\n")
        put(name .. "_count" .. braces(labels) .. " " .. number_text(total) .. "\n")
      end
    end
  end
  return concat(out)
end

--- nginx(): answers GET /metrics in a content handler
function Registry:nginx()
  local ngx = rawget(_G, "ngx")
  ngx.header["Content-Type"] = M.CONTENT_TYPE
  ngx.print(self:render())
end

return M
