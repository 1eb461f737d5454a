-- The "curl" transport: the C core's libcurl handle (docs/transports.md).  One
-- handle per client, so connections stay alive between calls.
local core = require "kinot.core_loader"

local M = {}

--- new(opts) -> transport object with :send(request), :stream(...), :close()
function M.new(opts)
  local http = core.http()
  local base = {
    verify_tls = opts.verify_tls, ca_file = opts.ca_file, proxy = opts.proxy,
    max_body = opts.max_body,
  }
  local self = { name = "curl", sleep = core.sleep, now = core.monotonic }

  local function fill(req)
    req.verify_tls = base.verify_tls
    req.ca_file = base.ca_file
    req.proxy = base.proxy
    req.max_body = req.max_body or base.max_body
    return req
  end

  --- send(req) -> response | nil, kind, message, not_sent
  function self.send(req)
    return http:request(fill(req))
  end

  --- stream(slots, take, done): up to `slots` requests at once, each slot
  -- given the next as soon as its last one ended (kinot.request.stream).
  -- take(free) -> {req...} (at most free), delay: asked again when one
  -- ends, or after `delay` seconds at the latest (nil: only when one ends;
  -- with none running, the stream is over).  done(req, res): res a
  -- response or {error=, message=, not_sent=}.  An error raised by take or done ends the stream: what
  -- was still running is abandoned (its connection closed), and it goes on.
  function self.stream(slots, take, done)
    local s = http:stream(slots)
    local ok, err = pcall(function()
      local slot_of, free, running = {}, {}, 0
      for k = slots, 1, -1 do free[#free + 1] = k end
      while true do
        local reqs, delay
        if running < slots then reqs, delay = take(slots - running) end
        for k = 1, reqs and #reqs or 0 do
          local req = fill(reqs[k])
          local slot = free[#free]
          free[#free] = nil
          slot_of[slot] = req
          running = running + 1
          s:add(slot, req) -- (a request that could not start comes back from wait)
        end
        if running == 0 then
          if not delay then return end
          core.sleep(delay)
        else
          local ended, results = s:wait(delay)
          for k = 1, #ended do
            local slot = ended[k]
            local req = slot_of[slot]
            slot_of[slot] = nil
            free[#free + 1] = slot
            running = running - 1
            done(req, results[k])
          end
        end
      end
    end)
    s:close()
    if not ok then error(err, 0) end
  end

  function self.close()
    http:close()
  end

  return self
end

return M
