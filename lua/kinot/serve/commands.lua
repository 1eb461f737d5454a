-- The commands of `kinot serve` (its dashboard's buttons; docs/dashboard.md):
--   POST /api/devices/{sn}/commands  {"command": "reset_bt_match_code" | "activate" | "freeze",
--                                     "request_id": "16 to 64 letters, digits, - or _"}
--   GET  /api/commands/{request_id}  the command's course, as this host follows it
-- A command goes out through the SDK's own path (client:reset_bt_match_code,
-- activate_sensor, freeze_sensor: send_command, never sent twice), once per
-- request_id: a POST again with the same id (a retry, a double click) is
-- answered the record of the first, and nothing is sent. One command per
-- device is in course at a time. What can send a command needs the API
-- token, from loopback too. The course is followed in a timer
-- (client:wait_command's on_status) and kept in a lua_shared_dict
-- (kinot_serve_commands) for an hour.
local json = require "kinot.json"
local api = require "kinot.serve.api"
local whole = require("kinot.vocabulary").whole

local M = {}

-- what a button asks -> the kind of device that takes it, the client's method
M.COMMANDS = {
  reset_bt_match_code = { kind = "lock", method = "reset_bt_match_code" },
  activate = { kind = "sensor", method = "activate_sensor" },
  freeze = { kind = "sensor", method = "freeze_sensor" },
}
M.KEEP = 3600     -- seconds a command's record is kept
M.WAIT = 120      -- seconds a command is followed to its final status
M.FOLLOWERS = 32  -- timers of a worker following commands (M.followers)
local FINAL = { succeeded = true, failed = true }

-- a serial as text: "%d", never tostring (inside nginx, LuaJIT writes a
-- number with 14 digits: 100000000000001 and 100000000000002 read "1e+14")
local function serial(sn) return string.format("%d", sn) end

-- the key marking the device's command in course
local function in_course(sn) return "sn:" .. serial(sn) end

local function problem(status, message, reason)
  return status, json.encode { error = message, reason = reason }
end

local function load(dict, id)
  local text = dict:get("req:" .. id)
  return text and json.decode(text)
end

local function save(dict, rec)
  local ok, err = dict:set("req:" .. rec.id, json.encode(rec), M.KEEP)
  if not ok then return nil, err end
  return true
end

-- rec moves to status (the platform's, or ours: queued, unknown, timeout,
-- error); a repeated status adds nothing to the course
local function step(rec, status, now, why)
  local last = rec.course[#rec.course]
  if not last or last.status ~= status then rec.course[#rec.course + 1] = { status = status, at = now } end
  rec.status = status
  if why then rec.reason = why end
end

-- the command's end, as far as this host follows it: the device is free for another
local function finish(dict, rec)
  rec.final = true
  save(dict, rec)
  if dict:get(in_course(rec.sn)) == rec.id then dict:delete(in_course(rec.sn)) end
end

--- follow(ctx, id): in a timer, the command followed to its final status
function M.follow(ctx, id)
  local dict, now = ctx.dict, ctx.now
  local rec = load(dict, id)
  if not rec or rec.final then return end
  -- the device's mark, held while the command waited in the queue, now
  -- lasts the follow (and a margin: a worker that dies frees it)
  local mark = in_course(rec.sn)
  if dict:get(mark) == id then dict:safe_set(mark, id, (ctx.wait or M.WAIT) + 30) end
  local ok, cmd, err = pcall(ctx.client.wait_command, ctx.client, rec.guid, { timeout = ctx.wait or M.WAIT,
    on_status = function(c)
      step(rec, c.command_status, now(), c.command_status == "failed" and c.reason or nil)
      if not FINAL[c.command_status] then save(dict, rec) end
    end })
  if not ok then -- a guid the SDK refuses (an answer without one): the record ends, the device is free
    cmd, err = nil, cmd
  end
  if not cmd then
    local last = type(err) == "table" and err.command
    if last then step(rec, last.command_status, now()) end
    step(rec, type(err) == "table" and err.kind == "timeout" and "timeout" or "error", now(), tostring(err))
  end
  finish(dict, rec)
end

--- followers(ctx, n, log) -> spawn(id): the commands sent, followed by at
-- most n timers of this worker, each taking the next id from the worker's
-- queue until it is empty. nginx runs lua_max_running_timers (256) at once
-- and drops, with a log line only, a timer due beyond that: one timer per
-- command in course took them all in a storm of commands, and the 257th's
-- follow, the sync loop and the sweep were dropped for good
-- (serve_commands_attack_spec). When the worker exits (nginx -s reload) a
-- follower still follows its queue to the end: the old worker stays until then.
function M.followers(ctx, n, log)
  local ngx = rawget(_G, "ngx")
  local queue, head, tail, running = {}, 1, 0, 0
  local function follower()
    while head <= tail do
      local id = queue[head]
      queue[head], head = nil, head + 1
      local ok, err = pcall(M.follow, ctx, id)
      if not ok then log("following command " .. id .. " raised: " .. tostring(err)) end
    end
    running = running - 1
  end
  return function(id)
    tail = tail + 1
    queue[tail] = id
    if running >= n then return end -- a follower running takes it when it is done with its own
    local ok, err = ngx.timer.at(0, follower)
    if ok then running = running + 1
    else log("cannot start a follower for command " .. id .. " (" .. tostring(err) .. "): queued for the next") end
  end
end

local function read_command(body)
  local ok, doc = pcall(json.decode, body or "")
  if not ok or type(doc) ~= "table" then return nil, "the body must be a JSON object {command, request_id}" end
  if type(doc.command) ~= "string" or not M.COMMANDS[doc.command] then
    return nil, "command must be reset_bt_match_code, activate or freeze"
  end
  if type(doc.request_id) ~= "string" or not doc.request_id:match("^[%w_%-]+$") or #doc.request_id < 16
     or #doc.request_id > 64 then
    return nil, "request_id must be 16 to 64 letters, digits, - or _ (one per command: a retry sends the same)"
  end
  return doc
end

-- the answer to a request_id already claimed: the first one's record
-- (a retry, a double click), or 409 when it was for another device or command
local function claimed(held, sn, command)
  if held.sn ~= sn or held.command ~= command then
    return problem(409, "request_id " .. held.id .. " was given to another command", "request_id_taken")
  end
  return 200, json.encode(held) -- nothing sent
end

local function post(ctx, req, sn_text)
  local ok, reason, why = api.token_given(req, ctx.token)
  if not ok then return problem(reason == "no_token" and 403 or 401, why, reason) end
  local sn = whole(tonumber(sn_text))
  if not sn or sn < 1 then return problem(400, "a serial is wanted") end
  local doc, bad = read_command(req.body)
  if not doc then return problem(400, bad) end
  local dict, now, id = ctx.dict, ctx.now, doc.request_id
  local held = load(dict, id)
  if held then return claimed(held, sn, doc.command) end
  local device, derr = ctx.twin:device(sn)
  if not device then
    if derr then return problem(503, "the twin's store failed: " .. tostring(derr)) end
    return problem(404, "the twin has never seen device " .. serial(sn))
  end
  local spec = M.COMMANDS[doc.command]
  if device.kind ~= spec.kind then
    return problem(409, doc.command .. " is for a " .. spec.kind .. "; device " .. serial(sn) .. " is a " .. device.kind,
      "wrong_kind")
  end
  local rec = { id = id, sn = sn, command = doc.command, kind = device.kind, course = {}, final = false }
  step(rec, "queued", now())
  local added, aerr = dict:safe_add("req:" .. id, json.encode(rec), M.KEEP)
  if not added then
    if aerr == "exists" then -- the same id, at the same moment
      held = load(dict, id)
      if held then return claimed(held, sn, doc.command) end
      return problem(409, "request_id " .. id .. " was claimed at the same moment", "request_id_taken")
    end
    return problem(503, "no room to record the command (" .. tostring(aerr) .. "): nothing sent")
  end
  -- the device's mark: until the follow starts (M.follow then gives it
  -- the follow's length), however long the command waits in the queue
  local free, ferr = dict:safe_add(in_course(sn), id, M.KEEP)
  if not free then
    local other = ferr == "exists" and dict:get(in_course(sn))
    step(rec, "refused", now(), other and ("a command for device " .. serial(sn) .. " is in course (" .. other .. ")")
      or ("no room to record the command (" .. tostring(ferr) .. ")"))
    rec.final = true
    save(dict, rec)
    return 409, json.encode(rec)
  end
  local cmd, err = ctx.client[spec.method](ctx.client, sn)
  if not cmd then
    -- unknown_outcome: it may have been created; never sent again from here
    step(rec, err.kind == "unknown_outcome" and "unknown" or "failed", now(), tostring(err))
    finish(dict, rec)
    return 202, json.encode(rec)
  end
  rec.guid = cmd.guid
  step(rec, cmd.command_status or "sending", now(), cmd.command_status == "failed" and cmd.reason or nil)
  if FINAL[rec.status] then
    finish(dict, rec)
  else
    save(dict, rec)
    ctx.spawn(id)
  end
  return 202, json.encode(rec)
end

local function get(ctx, req, id)
  local ok, why = api.allowed(req, ctx.token)
  if not ok then return problem(401, why) end
  local rec = id:match("^[%w_%-]+$") and #id <= 64 and load(ctx.dict, id)
  if not rec then return problem(404, "no command " .. id:sub(1, 64) .. " on this host") end
  return 200, json.encode(rec)
end

--- handle(ctx, req) -> status, body (JSON).  ctx: { twin, client, dict (a
-- lua_shared_dict), token, now, spawn(id) (follow it in a timer), wait };
-- req: { method, path, body, remote_addr, host, authorization }
function M.handle(ctx, req)
  local sn = req.path:match("^/api/devices/([^/]+)/commands$")
  if sn then
    if req.method ~= "POST" then return problem(405, "a command is POSTed") end
    return post(ctx, req, sn)
  end
  local id = req.path:match("^/api/commands/([^/]+)$")
  if id then
    if req.method ~= "GET" and req.method ~= "HEAD" then return problem(405, "a command's course is read with GET") end
    return get(ctx, req, id)
  end
  return problem(404, "no such API path")
end

--- nginx(ctx): answers the request in a content handler
function M.nginx(ctx)
  local ngx = rawget(_G, "ngx")
  local body
  if ngx.req.get_method() == "POST" then
    ngx.req.read_body()
    body = ngx.req.get_body_data()
  end
  local status, text = M.handle(ctx, {
    method = ngx.req.get_method(), path = ngx.var.uri, body = body,
    remote_addr = ngx.var.remote_addr, host = ngx.var.host, authorization = ngx.var.http_authorization,
  })
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "no-store"
  ngx.header["X-Content-Type-Options"] = "nosniff" -- an error echoes the path
  if status == 401 then ngx.header["WWW-Authenticate"] = 'Bearer realm="kinot"' end
  ngx.print(text, "\n")
end

return M
