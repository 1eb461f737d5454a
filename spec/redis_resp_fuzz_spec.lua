-- kinot.redis's RESP reader fuzzed against a reference: random valid RESP2
-- replies (nested arrays up to 31 deep, nil bulks and arrays, empty arrays,
-- errors inside arrays, integers, bulks holding CRLFs and up to 200 KB),
-- each sent by a FAKE server (spec/support/resp_replay.py: a real
-- redis-server cannot send an arbitrary reply, nor cut one where it likes)
-- whole, cut at random into separate TCP reads, or one byte at a time; the
-- reader must give exactly the value generated (spec/support/resp_fuzz.lua),
-- outside nginx (LuaSocket) and inside (cosockets).  Then malformed
-- replies, each refused with an error of kind decode.
local kredis = require "kinot.redis"
local fuzz = require "resp_fuzz"
local H = require "helpers"

local CASES = tonumber(os.getenv("RESP_FUZZ_CASES") or "") or 300

-- the FAKE answering with these replies (wires), one after another: a
-- file of them where resp_replay.py reads them, and the process; stop()
-- ends it and removes the file
local function replay(wires, seed)
  local parts = {}
  for i, wire in ipairs(wires) do parts[i] = #wire .. "\n" .. wire end
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(parts))
  f:close()
  local p = assert(io.popen("exec python3 " .. H.root .. "/spec/support/resp_replay.py " .. path .. " " .. seed))
  local port, pid = p:read("*n", "*n")
  assert(port and pid, "resp_replay.py did not start")
  return { url = "redis://127.0.0.1:" .. port, stop = function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    p:close()
    os.remove(path)
  end }
end

-- n random cases (a list of { wire, canon }), and their wires
local function cases(seed, n)
  math.randomseed(seed)
  local list, wires = {}, {}
  for i = 1, n do
    local wire, canon = fuzz.gen(math.random)
    list[i], wires[i] = { wire = wire, canon = canon }, wire
  end
  return list, wires
end

local function diff(a, b)
  local i = 1
  while i <= #a and a:byte(i) == b:byte(i) do i = i + 1 end
  return string.format("differ at byte %d: got %q, want %q", i, a:sub(i, i + 40), b:sub(i, i + 40))
end

describe("kinot.redis's RESP reader fuzzed against a reference parse #peer #nginx", function()
  local seed = tonumber(os.getenv("RESP_FUZZ_SEED") or "") or os.time()

  it("reads each random valid reply, cut anywhere, exactly (LuaSocket; seed " .. seed .. ")", function()
    local list, wires = cases(seed, CASES)
    local peer = replay(wires, seed)
    finally(peer.stop)
    local c = kredis.new(peer.url, { timeout = 10 })
    for i, case in ipairs(list) do
      local v, err = c:call("PING")
      assert(v ~= nil, "case " .. i .. ": " .. tostring(err))
      local got = fuzz.canon(v, kredis.null, kredis.ReplyError)
      if got ~= case.canon then error("case " .. i .. " (seed " .. seed .. "): " .. diff(got, case.canon), 0) end
    end
    c:close()
  end)

  it("reads each random valid reply, cut anywhere, exactly (cosockets; seed " .. seed .. ")", function()
    local list, wires = cases(seed + 1, CASES)
    local peer = replay(wires, seed + 1)
    local ng = H.nginx { server = [[
      location = /fuzz { content_by_lua_block {
        package.path = "]] .. H.root .. [[/spec/support/?.lua;" .. package.path
        local kredis = require "kinot.redis"
        local fuzz = require "resp_fuzz"
        local c = kredis.new("]] .. peer.url .. [[", { timeout = 10 })
        local n = tonumber(ngx.var.arg_n)
        for i = 1, n do
          local v, err = c:call("PING")
          if v == nil then ngx.print("E", tostring(err), "\n") return end
          local s = fuzz.canon(v, kredis.null, kredis.ReplyError)
          ngx.print(#s, "\n", s)
        end
      } }
    ]] }
    finally(function()
      ng.stop()
      peer.stop()
    end)
    -- (at most 10 cases and 4 MB a request: the replies, re-encoded, are
    -- many MB, past H.raw's cap; the FAKE
    -- answers with the next reply of its list whatever the connection)
    local body, at = "", 1
    for i, case in ipairs(list) do
      if at > #body then
        local n, size = 0, 0
        while i + n <= #list and n < 10 and size + #list[i + n].canon < 4e6 do
          size, n = size + #list[i + n].canon, n + 1
        end
        body, at = H.raw("GET", ng.url .. "/fuzz?n=" .. math.max(n, 1)).body, 1
      end
      local nl = body:find("\n", at, true)
      assert(nl, "case " .. i .. ": no answer")
      local head = body:sub(at, nl - 1)
      local n = tonumber(head)
      assert(n, "case " .. i .. ": " .. head)
      local got = body:sub(nl + 1, nl + n)
      at = nl + n + 1
      if got ~= case.canon then error("case " .. i .. " (seed " .. seed + 1 .. "): " .. diff(got, case.canon), 0) end
    end
  end)
end)

describe("kinot.redis's RESP reader refuses a malformed reply #peer", function()
  -- each: its wire, whole (nothing more follows): never a value, an error
  -- of kind decode, at once
  local BAD = {
    ":0x10\r\n", ":1e3\r\n", ": 5\r\n", ":5 \r\n", ":+5\r\n", ":\r\n", ":inf\r\n", ":nan\r\n", ":--1\r\n",
    "*1\r\n:0x10\r\n", "$-2\r\n", "*-2\r\n", "$5x\r\n", "$ 5\r\n", "$+5\r\nhello\r\n", "*1e1\r\n",
    "$5\r\nhelloXY", "$0\r\nXY", "*2\r\n:1\r\n%1\r\n", "\r\n", "*1\r\n\r\n", "_\r\n", "#t\r\n", ",1.5\r\n",
  }
  it("each of " .. #BAD .. " malformed replies is an error of kind decode, at once (LuaSocket)", function()
    local peer = replay(BAD, 1)
    finally(peer.stop)
    local c = kredis.new(peer.url, { timeout = 2 })
    for _, w in ipairs(BAD) do
      local v, err = c:call("PING")
      assert.is_nil(v, string.format("%q read as %s", w, tostring(v)))
      assert.are.equal("decode", err.kind, string.format("%q: %s", w, tostring(err)))
    end
    c:close()
  end)
end)

describe("kinot.redis's RESP reader at its bounds: nesting, a connection closed mid-reply #peer #nginx", function()
  -- each: wire (a leading "CLOSE:": the FAKE closes the connection after
  -- it), and the kind of error it must be, or "ok"
  local BOUNDS = {
    { ("*1\r\n"):rep(32) .. ":7\r\n", "ok" },
    { ("*1\r\n"):rep(33) .. ":7\r\n", "decode" },
    { "CLOSE:*3\r\n:1\r\n", "network" },
    { "CLOSE:*2\r\n*2\r\n$3\r\nabc\r\n", "network" },
    { "CLOSE:$10\r\nabc", "network" },
    { "CLOSE:$3\r\nabc", "network" },
    { "CLOSE:+OK", "network" },
    { "CLOSE:", "network" },
  }
  local peer
  setup(function()
    local wires = {}
    for i, c in ipairs(BOUNDS) do wires[i] = c[1] end
    peer = replay(wires, 1)
  end)
  teardown(function() peer.stop() end)

  local function outcome(v, err)
    if v ~= nil then return "ok" end
    return err.kind
  end

  it("32 arrays deep read, 33 refused, a reply cut by a close an error of kind network, at once (LuaSocket)", function()
    for i, case in ipairs(BOUNDS) do
      local c = kredis.new(peer.url, { timeout = 3 })
      local t0 = os.time()
      local v, err = c:call("PING")
      assert.are.equal(case[2], outcome(v, err), "case " .. i .. ": " .. tostring(err))
      assert.is_true(os.time() - t0 <= 1, "case " .. i .. " waited")
      c:close()
    end
  end)

  it("the same inside nginx (cosockets)", function()
    local ng = H.nginx { server = [[
      location = /bound { content_by_lua_block {
        local kredis = require "kinot.redis"
        for _ = 1, tonumber(ngx.var.arg_n) do
          local c = kredis.new("]] .. peer.url .. [[", { timeout = 3 })
          local t0 = ngx.now()
          local v, err = c:call("PING")
          ngx.update_time()
          ngx.say(v ~= nil and "ok" or err.kind, " ", ngx.now() - t0)
          c:close()
        end
      } }
    ]] }
    finally(ng.stop)
    local body = H.raw("GET", ng.url .. "/bound?n=" .. #BOUNDS).body
    local i = 0
    for kind, took in body:gmatch("(%S+) (%S+)\n") do
      i = i + 1
      assert.are.equal(BOUNDS[i][2], kind, "case " .. i)
      assert.is_true(tonumber(took) < 1, "case " .. i .. " took " .. took)
    end
    assert.are.equal(#BOUNDS, i)
  end)
end)

describe("kinot.redis's RESP reader holds about what max_reply allows #peer", function()
  -- A reply of 700,000 empty arrays ("*0": 4 bytes each, 2.8 MB) is within
  -- a 16 MiB max_reply as counted (its header, ELEMENT bytes an element),
  -- but each empty array is a Lua table (56 bytes and more): read, it
  -- held ~55 MB.  A reply must either be refused (too_large) or held in
  -- at most twice the cap.
  it("a wide reply of empty arrays is refused or held within twice max_reply", function()
    local n = 700000
    local peer = replay({ "*" .. n .. "\r\n" .. ("*0\r\n"):rep(n) }, 1) -- (the wire not held here)
    finally(peer.stop)
    local cap = 16 * 1024 * 1024
    local c = kredis.new(peer.url, { timeout = 20, max_reply = cap })
    collectgarbage()
    collectgarbage()
    local before = collectgarbage("count") * 1024
    local v, err = c:call("PING")
    local held = collectgarbage("count") * 1024 - before
    c:close()
    if v == nil then
      assert.are.equal("too_large", err.kind, tostring(err))
    else
      assert.is_true(held <= 2 * cap, string.format("read, and held %.0f MB for a %d MB cap", held / 2 ^ 20, cap / 2 ^ 20))
    end
  end)
end)
