-- callback.handler(opts) for OpenResty: build once (init_by_lua or at module
-- level), then `content_by_lua_block { receive() }`.  The platform gets its
-- answer at once; on_status / on_command run afterwards in a timer, so a
-- slow handler never delays the platform nor the worker's other requests.
local receiver = require "kinot.callback.receiver"

local ngx = ngx -- luacheck: ignore
local M = {}

-- a lua_shared_dict as the dedupe set: shared by every worker
local function dict_set(name, ttl)
  local dict = ngx.shared[name]
  if not dict then error("kinot: dedupe names lua_shared_dict '" .. name .. "', which nginx.conf does not declare", 4) end
  return {
    add = function(_, key)
      local ok, err = dict:add(key, true, ttl)
      if ok then return true end
      if err == "exists" then return false end
      return true -- a full dict must not lose a callback: process it
    end,
  }
end

local function run(premature, rcv, ev)
  if premature then return end
  local ok, err = rcv:dispatch(ev)
  if not ok then ngx.log(ngx.ERR, "kinot callback handler failed for sn ", tostring(ev.sn), ": ", tostring(err)) end
end

-- nginx keeps a large body in a file (client_body_buffer_size): memory
-- stays bounded, and only max_body + 1 bytes are ever read from it
local function read_body(max_body)
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local file = ngx.req.get_body_file() -- bigger than client_body_buffer_size
  if not file then return "" end
  local f = io.open(file, "rb")
  if not f then return nil, "unreadable" end
  body = f:read(max_body + 1)
  f:close()
  if body and #body > max_body then return nil, "too_large" end
  return body or ""
end

function M.new(opts)
  if type(opts) ~= "table" then error("kinot: callback.handler needs a table of options", 3) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.dedupe ~= nil then
    if type(o.dedupe) ~= "string" then error("kinot: dedupe must name a lua_shared_dict", 3) end
    if ngx and ngx.shared then o.seen = dict_set(o.dedupe, o.dedupe_ttl or 3600) end
  end
  local rcv = receiver.new(o)
  local max_body = rcv.max_body

  return function()
    ngx.header["Content-Type"] = "application/json"
    if ngx.req.get_method() ~= "POST" then
      ngx.status = 405
      return ngx.say('{"code":405,"message":"callbacks are POSTed"}')
    end
    local body, why = read_body(max_body)
    local status, answer, ev
    if not body then
      status = why == "too_large" and 413 or 400
      answer = '{"code":' .. status .. ',"message":"callback body ' ..
        (why == "too_large" and ("over the " .. max_body .. "-byte cap") or "could not be read") .. '"}'
    else
      status, answer, ev = rcv:receive(body)
    end
    ngx.status = status
    ngx.print(answer)
    if not ev then return end
    ngx.eof()
    local ok = ngx.timer.at(0, run, rcv, ev)
    if not ok then run(false, rcv, ev) end -- no timer left: run here rather than lose it
  end
end

return M
