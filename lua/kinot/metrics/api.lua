-- The API client's metrics (docs/metrics.md): kinot.new{ metrics =
-- registry } gives the request pipeline (kinot.request) this recorder.
-- The endpoint label is the call's path template ("/lockers",
-- "/lockers/{sn}", "/commands"): a serial is never a label.
local M = {}
M.__index = M

local floor, gsub, type = math.floor, string.gsub, type
local AS_SENT = require("kinot.vocabulary").COMMAND_STATUS_AS_SENT
local FINAL = { succeeded = "succeeded", failed = "failed" }
-- commands created and not yet seen final, kept at most (a guid a
-- command: a client that never follows its commands must not grow)
M.MAX_FOLLOWED = 100000

-- "/lockers/644200001" -> "/lockers/{sn}"
local function template(path)
  return (gsub(path, "/%d+", "/{sn}"))
end
M.template = template

--- new(registry[, clock]) -> recorder
function M.new(reg, clock)
  require("kinot.metrics").check(reg, "kinot.new")
  return setmetatable({
    clock = clock or require("kinot.core").monotonic, sent = {}, followed = 0,
    commands = reg:counter("kinot_commands_total",
      "Commands this client created and then saw final, by final status (succeeded, failed)", { "status" }),
    to_final = reg:histogram("kinot_command_duration_seconds",
      "Time from a command's creation (its POST answered) to the answer that showed it final", nil,
      { 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300 }),
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

--- answered(call, doc): a decoded answer; a command's creation or its
-- poll (POST or GET /commands) followed to its final status
function M:answered(call, doc)
  if call.path ~= "/commands" then return end
  local cmd = type(doc.objects) == "table" and doc.objects[1]
  if type(cmd) ~= "table" or cmd.guid == nil then return end
  local guid = cmd.guid
  local status = cmd.command_status
  if status == nil then status = cmd[AS_SENT] end
  local sent = self.sent
  if call.method == "POST" then
    if self.followed >= M.MAX_FOLLOWED then
      sent = {} -- forgotten: those still out are not counted
      self.sent, self.followed = sent, 0
    end
    sent[guid] = self.clock()
    self.followed = self.followed + 1
  end
  local at = sent[guid]
  if at and FINAL[status] then
    sent[guid] = nil
    self.followed = self.followed - 1
    self.commands:inc(1, FINAL[status])
    self.to_final:observe(self.clock() - at)
  end
end

function M:retry(call) self.retries:inc(1, template(call.path)) end

function M:unknown_outcome(call) self.unknown:inc(1, template(call.path)) end

return M
