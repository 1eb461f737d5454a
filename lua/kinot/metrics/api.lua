-- The API client's metrics (docs/metrics.md): kinot.new{ metrics =
-- registry } gives the request pipeline (kinot.request) this recorder.
-- The endpoint label is the call's path template ("/lockers",
-- "/lockers/{sn}", "/commands"): a serial is never a label.
local M = {}
M.__index = M

local floor, gsub = math.floor, string.gsub

-- "/lockers/644200001" -> "/lockers/{sn}"
local function template(path)
  return (gsub(path, "/%d+", "/{sn}"))
end
M.template = template

--- new(registry) -> recorder
function M.new(reg)
  return setmetatable({
    requests = reg:counter("kinot_api_requests_total",
      "API attempts answered or failed, by endpoint (path template) and status class (2xx, 4xx, 5xx, error)",
      { "endpoint", "status_class" }),
    retries = reg:counter("kinot_api_retries_total", "API attempts sent again, by endpoint", { "endpoint" }),
    unknown = reg:counter("kinot_api_unknown_outcomes_total",
      "Calls that are not idempotent (a command) which may or may not have arrived, by endpoint", { "endpoint" }),
    latency = reg:histogram("kinot_api_request_duration_seconds", "Time of one API attempt, by endpoint",
      { "endpoint" }),
  }, M)
end

local CLASS = { "1xx", "2xx", "3xx", "4xx", "5xx" }

--- attempt(call, status | nil (a transport failure), seconds)
function M:attempt(call, status, seconds)
  local class = status and CLASS[floor(status / 100)] or "error"
  local endpoint = template(call.path)
  self.requests:inc(1, endpoint, class)
  if seconds then self.latency:observe(seconds, endpoint) end
end

function M:retry(call) self.retries:inc(1, template(call.path)) end

function M:unknown_outcome(call) self.unknown:inc(1, template(call.path)) end

return M
