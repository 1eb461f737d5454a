-- Random valid RESP2 replies and what each must read as, for the reply
-- reader's fuzz (spec/redis_resp_fuzz_spec.lua): gen(rnd) -> wire bytes, the
-- value's canonical text; canon(v) -> the canonical text of a value the
-- reader returned (strings, integers, redis.null, arrays, ReplyErrors
-- inside arrays), so that two runtimes' results compare as strings.
local M = {}

local concat, char = table.concat, string.char

local function bytes(rnd, n, crlf_free)
  local t = {}
  for i = 1, n do
    local b = rnd(0, 255)
    if crlf_free and (b == 13 or b == 10) then b = 120 end
    t[i] = char(b)
  end
  -- (a bulk often holds CRLFs and headers of its own)
  if not crlf_free and n >= 6 and rnd(1, 3) == 1 then
    local at = rnd(1, n - 5)
    t[at], t[at + 1], t[at + 2], t[at + 3], t[at + 4] = "\r", "\n", "*", "1", "\r"
  end
  return concat(t)
end

local room -- (bytes of big bulks a reply has left: at most 1 MB a reply)
local function len_of(rnd)
  local r = rnd(1, 100)
  if r <= 70 then return rnd(0, 20) end
  if r <= 95 then return rnd(21, 2000) end
  if room < 200000 then return rnd(0, 20) end
  room = room - 200000
  return rnd(2001, 200000)
end

-- -> wire, canon
-- (budget: the values a reply has left, so that it stays small: a chain
-- of one-element arrays goes deep, a wide one stays shallow)
local budget
local function value(rnd, depth, inside)
  local r = rnd(1, 100)
  budget = budget - 1
  if depth < 31 and r <= 30 and budget > 0 then
    local n = rnd(1, 100) <= 80 and rnd(0, 3) or (rnd(1, 2) == 1 and 1 or rnd(4, 300))
    n = math.min(n, budget)
    if n == 0 then return "*0\r\n", "a0[]" end
    local w, c = { "*" .. n .. "\r\n" }, { "a" .. n .. "[" }
    for i = 1, n do w[i + 1], c[i + 1] = value(rnd, depth + 1, true) end
    c[#c + 1] = "]"
    return concat(w), concat(c)
  end
  if r <= 33 and depth < 31 then
    -- a chain of one-element arrays, as deep as the reader allows
    local d = rnd(1, 31 - depth)
    local w, c = ("*1\r\n"):rep(d), ("a1["):rep(d)
    local w2, c2 = value(rnd, depth + d, true)
    return w .. w2, c .. c2 .. ("]"):rep(d)
  end
  if r <= 35 then return "*-1\r\n", "n" end
  if r <= 40 then return "$-1\r\n", "n" end
  if r <= 55 then
    local v = rnd(-2 ^ 31, 2 ^ 31) * (rnd(1, 4) == 1 and 2 ^ 21 or 1)
    local s = string.format("%d", v)
    return ":" .. s .. "\r\n", "i" .. s
  end
  if r <= 65 then
    local s = bytes(rnd, rnd(0, 40), true)
    return "+" .. s .. "\r\n", "s" .. #s .. ":" .. s
  end
  if inside and r <= 72 then
    local codes = { "ERR", "OOM", "READONLY", "WRONGTYPE", "NOSCRIPT", "", "lower" }
    local code = codes[rnd(1, #codes)]
    local s = code .. (code ~= "" and " " or "") .. bytes(rnd, rnd(0, 30), true)
    local want = s:match("^(%u+)") or "ERR"
    return "-" .. s .. "\r\n", "e" .. #s .. ":" .. s .. "|" .. want
  end
  local s = bytes(rnd, len_of(rnd), false)
  return "$" .. #s .. "\r\n" .. s .. "\r\n", "s" .. #s .. ":" .. s
end

function M.gen(rnd)
  budget, room = rnd(1, 4) == 1 and 2000 or 60, 1000000
  return value(rnd, 0, false)
end

function M.canon(v, null, ReplyError)
  local out = {}
  local function walk(x)
    if x == null then
      out[#out + 1] = "n"
    elseif type(x) == "string" then
      out[#out + 1] = "s" .. #x .. ":" .. x
    elseif type(x) == "number" then
      out[#out + 1] = "i" .. string.format("%d", x)
    elseif getmetatable(x) == ReplyError then
      out[#out + 1] = "e" .. #x.text .. ":" .. x.text .. "|" .. tostring(x.code)
    elseif type(x) == "table" and getmetatable(x) == nil then
      out[#out + 1] = "a" .. #x .. "["
      for i = 1, #x do walk(x[i]) end
      out[#out + 1] = "]"
    else
      out[#out + 1] = "?" .. tostring(x)
    end
  end
  walk(v)
  return concat(out)
end

return M
