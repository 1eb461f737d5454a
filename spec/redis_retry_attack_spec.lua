-- kinot.redis's one retry (a kept connection found dead is replaced and
-- the command sent again on a fresh one) must be taken only when nothing
-- of the reply came back: a reply begun then cut means the server ran the
-- command, and sending it again runs it twice.  A FAKE server (a real
-- redis-server cannot be made to cut its reply part way): resp_replay.py
-- answers each command with the next reply of its list, a "CLOSE:" one
-- then closing the connection.
local kredis = require "kinot.redis"
local H = require "helpers"

-- the FAKE answering with these replies, one after another (across connections)
local function replay(wires)
  local parts = {}
  for i, wire in ipairs(wires) do parts[i] = #wire .. "\n" .. wire end
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(parts))
  f:close()
  local p = assert(io.popen("exec python3 " .. H.root .. "/spec/support/resp_replay.py " .. path .. " 1"))
  local port, pid = p:read("*n", "*n")
  assert(port and pid, "resp_replay.py did not start")
  return { url = "redis://127.0.0.1:" .. port, stop = function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    p:close()
    os.remove(path)
  end }
end

describe("kinot.redis's retry after a reply cut part way #peer", function()
  -- the first reply keeps the connection; the second is cut after its
  -- first bytes; the third is what a command sent again would be answered
  for _, case in ipairs {
    { "a command", function(c) return c:call("INCR", "n") end },
    { "a pipeline", function(c)
      local v, err = c:pipeline { { "INCR", "n" } }
      return v and v[1], err
    end },
  } do
    for _, cut in ipairs { "CLOSE:$10\r\nabc", "CLOSE:+O", "CLOSE:*2\r\n:1\r\n" } do
      it(case[1] .. " whose reply on a kept connection is cut (" .. cut:sub(7):gsub("\r\n", " ") ..
         ") fails, kind network: it is not sent again", function()
        local peer = replay { "+PONG\r\n", cut, ":42\r\n" }
        local c = kredis.new(peer.url, { timeout = 3 })
        finally(function()
          c:close()
          peer.stop()
        end)
        assert.are.equal("PONG", c:call("PING"))
        local v, err = case[2](c)
        assert.is_nil(v, "sent again on a fresh connection: answered " .. tostring(v))
        assert.are.equal("network", err.kind)
        -- the next call is the one that gets the third reply
        assert.are.equal(42, case[2](c))
      end)
    end
  end

  it("a command whose kept connection closed before any byte of its reply is sent again, once", function()
    local peer = replay { "+PONG\r\n", "CLOSE:", ":42\r\n" }
    local c = kredis.new(peer.url, { timeout = 3 })
    finally(function()
      c:close()
      peer.stop()
    end)
    assert.are.equal("PONG", c:call("PING"))
    assert.are.equal(42, c:call("INCR", "n"))
  end)
end)
