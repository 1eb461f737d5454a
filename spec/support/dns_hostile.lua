-- A hostile nameserver for spec/dns_spec.lua: `lua5.4 dns_hostile.lua PORT`.
-- To each A query it first sends what an attacker would, then (unless the
-- name starts with "silent") the true answer, 127.0.0.1:
--   * the right question with a wrong id               -> 10.6.6.1
--   * the right id, another question (evil.example)    -> 10.6.6.2
--   * the right id and question, but not a response    -> 10.6.6.3
--   * the right id and question from another port      -> 10.6.6.4
--   * a question whose name is a compression pointer to itself (a loop)
-- A name starting with "loop" gets only an answer whose records' names
-- are pointer loops (and a record count far past the packet's end).
local socket = require "socket"

local port = assert(tonumber(arg[1]), "usage: dns_hostile.lua PORT")
local u = assert(socket.udp())
assert(u:setsockname("127.0.0.1", port))
local other = assert(socket.udp()) -- a second source port, for the off-path copy
assert(other:setsockname("127.0.0.1", 0))

local function u16(n) return string.char(n // 256 % 256, n % 256) end

local function answer(id, flags, question, a, an)
  local rr = "\192\12" .. "\0\1\0\1" .. "\0\0\0\60" .. "\0\4" .. string.char(a[1], a[2], a[3], a[4])
  return u16(id) .. flags .. "\0\1" .. u16(an or 1) .. "\0\0\0\0" .. question .. rr
end

local function qname(name)
  local q = {}
  for label in name:gmatch("[^.]+") do q[#q + 1] = string.char(#label) .. label end
  return table.concat(q) .. "\0"
end

while true do
  local data, ip, from = u:receivefrom()
  if data and #data > 12 then
    local id = data:byte(1) * 256 + data:byte(2)
    local question = data:sub(13) -- the query's one question: name, type, class
    local name = {}
    local i = 1
    while question:byte(i) and question:byte(i) > 0 do
      local n = question:byte(i)
      name[#name + 1] = question:sub(i + 1, i + n)
      i = i + n + 1
    end
    name = table.concat(name, ".")
    local ok = "\129\128" -- a response, recursion desired and available, no error
    if name:match("^loop") then
      -- names that point at themselves (offset 12 is the question's own
      -- start; 0xC00E points into the middle of a label), 50 answers claimed
      local rr = "\192\30" .. "\0\1\0\1\0\0\0\60\0\4\10\6\6\5"
      u:sendto(u16(id) .. ok .. "\0\1\0\50\0\0\0\0" .. question .. rr .. "\192\14", ip, from)
    else
      u:sendto(answer((id + 1) % 65536, ok, question, { 10, 6, 6, 1 }), ip, from)
      u:sendto(answer(id, ok, qname("evil.example") .. "\0\1\0\1", { 10, 6, 6, 2 }), ip, from)
      u:sendto(answer(id, "\1\0", question, { 10, 6, 6, 3 }), ip, from)
      other:sendto(answer(id, ok, question, { 10, 6, 6, 4 }), ip, from)
      socket.sleep(0.05)
      if not name:match("^silent") then u:sendto(answer(id, ok, question, { 127, 0, 0, 1 }), ip, from) end
    end
  end
end
