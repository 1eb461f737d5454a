-- How the CLI prints: aligned tables for people (colour only on a
-- terminal), JSON for scripts, errors on stderr.
--
-- Every string a person sees goes out through escape() (tables, key: value
-- lines, reports, `kinot verify`, errors): a string from the platform or a
-- callback body may carry ESC, OSC, BEL or C1 bytes that would rewrite the
-- screen or the window title.  The only escape sequences written are the
-- colours of paint(), which returns a styled value, not a string, so that
-- no text from outside can pass for one.  --json / --jsonl print exact JSON.
local json = require "kinot.json"
local vocabulary = require "kinot.vocabulary"

local M = {}

local byte, format, concat = string.byte, string.format, table.concat

-- ------------------------------------------------------------ escaping

-- code points shown escaped beside C0, DEL and C1: the bidirectional
-- controls (marks, overrides, isolates: Unicode's Bidi_Control, the
-- Trojan Source list), which reorder what a terminal shows, and the line
-- and paragraph separators
local BIDI = { [0x061C] = true, [0x200E] = true, [0x200F] = true, [0x2028] = true, [0x2029] = true }
for cp = 0x202A, 0x202E do BIDI[cp] = true end
for cp = 0x2066, 0x2069 do BIDI[cp] = true end

-- the length of a valid UTF-8 sequence at i and its code point, or nil
local function utf8_at(s, i, b)
  local n, min, cp
  if b >= 0xC2 and b <= 0xDF then n, min, cp = 2, 0x80, b - 0xC0
  elseif b >= 0xE0 and b <= 0xEF then n, min, cp = 3, 0x800, b - 0xE0
  elseif b >= 0xF0 and b <= 0xF4 then n, min, cp = 4, 0x10000, b - 0xF0
  else return nil end
  for k = 1, n - 1 do
    local c = byte(s, i + k)
    if not c or c < 0x80 or c > 0xBF then return nil end
    cp = cp * 64 + (c - 0x80)
  end
  if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
  return n, cp
end

--- escape(s[, keep_newlines]) -> s as a terminal shows it harmlessly:
-- C0 controls and DEL as \xNN (a newline kept when asked), C1 controls and
-- bidi overrides as \uNNNN, each byte of invalid UTF-8 as \xNN; every
-- other character as it is (a backslash too)
function M.escape(s, keep_newlines)
  s = tostring(s)
  if not s:find("[%z\1-\31\127-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local b = byte(s, i)
    if b < 0x20 or b == 0x7F then
      out[#out + 1] = (b == 10 and keep_newlines) and "\n" or format("\\x%02x", b)
      i = i + 1
    elseif b < 0x80 then
      local j = s:find("[%z\1-\31\127-\255]", i) or n + 1
      out[#out + 1] = s:sub(i, j - 1)
      i = j
    else
      local len, cp = utf8_at(s, i, b)
      if not len then
        out[#out + 1] = format("\\x%02x", b)
        i = i + 1
      else
        out[#out + 1] = ((cp >= 0x80 and cp <= 0x9F) or BIDI[cp]) and format("\\u%04x", cp) or s:sub(i, i + len - 1)
        i = i + len
      end
    end
  end
  return concat(out)
end

-- ------------------------------------------------------------ styled text

-- paint() returns one of these: parts of text, each with its colour or
-- none, rendered (escaped, then coloured) only when printed; `..` joins
-- them with each other and with plain strings
local Styled = {}
Styled.__index = Styled

local function parts_of(v)
  if getmetatable(v) == Styled then return v.parts end
  return { { text = tostring(v) } }
end

Styled.__concat = function(a, b)
  local parts = {}
  for _, p in ipairs(parts_of(a)) do parts[#parts + 1] = p end
  for _, p in ipairs(parts_of(b)) do parts[#parts + 1] = p end
  return setmetatable({ parts = parts }, Styled)
end
Styled.__tostring = function(v)
  local t = {}
  for i, p in ipairs(v.parts) do t[i] = M.escape(p.text) end
  return concat(t)
end

local COLORS = { red = 31, green = 32, yellow = 33, bold = 1, dim = 2 }

--- render(v[, keep_newlines]) -> the text to write for v: escaped, and coloured if
-- v is painted and colour is on
function M:render(v, keep_newlines)
  if v == nil or v == json.null then return "" end
  if getmetatable(v) ~= Styled then return M.escape(v, keep_newlines) end
  local t = {}
  for i, p in ipairs(v.parts) do
    local s = M.escape(p.text, keep_newlines)
    if p.color and self.color then s = "\27[" .. COLORS[p.color] .. "m" .. s .. "\27[0m" end
    t[i] = s
  end
  return concat(t)
end

local function isatty(fd)
  local ok = os.execute("test -t " .. fd)
  return ok == true or ok == 0
end

function M.new(opts)
  local o = {
    json = opts.json, jsonl = opts.jsonl,
    out = opts.stdout or io.stdout, err = opts.stderr or io.stderr,
  }
  o.color = not opts.no_color and not os.getenv("NO_COLOR") and isatty(1)
  o.tty_err = isatty(2)
  return setmetatable(o, { __index = M })
end

--- paint(color, s) -> styled text (s escaped when printed)
function M:paint(color, s) -- luacheck: ignore self
  return setmetatable({ parts = { { text = tostring(s), color = color } } }, Styled)
end

--- print(...): one line on stdout, each piece escaped (a newline in one
-- shows as \x0a: one call, one line)
function M:print(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = self:render((select(i, ...))) end
  self.out:write(concat(t), "\n")
end

--- note(...): one line on stderr, as print
function M:note(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = self:render((select(i, ...))) end
  self.err:write(concat(t), "\n")
  self.err:flush()
end

-- ------------------------------------------------------------ numbers

-- Decimals each numeric field shows in tables and key: value lines
-- (docs/cli.md, "Numbers in tables"): every field the reference types as
-- a float has its own; any other number is a whole one.  JSON carries the
-- platform's digits as they are.
M.DECIMALS = { voltage = 2, frequency = 3, rs_si = 1,
               share = 2, latency = 3 } -- `kinot sim fault list`

--- number_text(field, n) -> n as a person reads it in that field
function M.number_text(field, n)
  local d = M.DECIMALS[field]
  if d then return format("%." .. d .. "f", n) end
  if n == math.floor(n) and n > -2 ^ 63 and n < 2 ^ 63 then return format("%d", n) end
  return tostring(n)
end

local function cell_text(field, v)
  if type(v) == "number" then return M.number_text(field, v) end
  return v
end

-- display width of the escaped text (code points)
local function width(s)
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

--- table(rows, columns): columns = { {key, title}, ... }; numbers right-aligned
function M:table(rows, columns)
  local widths, cells = {}, {}
  for c, col in ipairs(columns) do widths[c] = width(col[2]) end
  for r, row in ipairs(rows) do
    cells[r] = {}
    for c, col in ipairs(columns) do
      local s = self:render(cell_text(col[1], row[col[1]]))
      cells[r][c] = s
      if width(s) > widths[c] then widths[c] = width(s) end
    end
  end
  local head = {}
  for c, col in ipairs(columns) do head[c] = col[2] .. string.rep(" ", widths[c] - width(col[2])) end
  self:print(self:paint("bold", (concat(head, "  "):gsub("%s+$", ""))))
  for r = 1, #rows do
    local line = {}
    for c = 1, #columns do
      local s = cells[r][c]
      local pad = string.rep(" ", widths[c] - width(s))
      line[c] = (type(rows[r][columns[c][1]]) == "number") and (pad .. s) or (s .. pad)
    end
    self.out:write((concat(line, "  "):gsub("%s+$", "")), "\n")
  end
end

--- kv(pairs_list): "key: value" lines, aligned; pairs_list = { {key, value}, ... }
function M:kv(pairs_list)
  local w = 0
  for _, p in ipairs(pairs_list) do if width(M.escape(p[1])) > w then w = width(M.escape(p[1])) end end
  for _, p in ipairs(pairs_list) do
    local key = M.escape(p[1])
    self:print(self:paint("dim", key .. ":" .. string.rep(" ", w - width(key) + 1)), cell_text(p[1], p[2]))
  end
end

-- ------------------------------------------------------------ JSON

local ENVELOPE = { "code", "message", "request_id" }
local function list(...)
  local t = {}
  for _, l in ipairs { ... } do for _, k in ipairs(l) do t[#t + 1] = k end end
  return t
end

-- Shapes (kinot.json.encode's): the order of an object's keys (`order`;
-- keys it does not name follow, sorted), the shapes of its members
-- (`fields`) or of a list's items (`items`: an empty table is then []).
-- Orders are the reference's (kinot.vocabulary.order).
local O = vocabulary.order
local S = {}
S.lock, S.sensor, S.dtu = { order = O.lock }, { order = O.sensor }, { order = O.dtu }
S.command = { order = O.command, fields = { parameter = { order = { "key", "value" } } } }
S.notification = { order = O.notification }
S.test_notification = { order = list(ENVELOPE, O.test_notification) }
for _, k in ipairs { "lock", "sensor" } do
  S[k .. "s"] = { items = S[k] } -- a list of devices (--all)
  S[k .. "_page"] = { order = list(ENVELOPE, { "offset", "limit", "objects", "count" }), fields = { objects = S[k .. "s"] } }
end
S.notifications = { items = S.notification }
local SECTION = { order = { "total", "occupied", "up", "down", "frozen", "low_battery", "faults", "weakest" },
                  fields = { faults = { order = vocabulary.faults.lock }, weakest = { items = { order = { "sn", "rs_si" } } } } }
local HISTOGRAM = { order = { "unit", "readings", "buckets" },
                    fields = { buckets = { items = { order = { "from", "to", "count" } } } } }
S.report = { order = { "locks", "sensors", "dtus", "occupancy", "groups", "battery", "signal" },
             fields = { locks = SECTION, sensors = SECTION, battery = HISTOGRAM, signal = HISTOGRAM,
                        groups = { order = { "groups", "ungrouped" },
                                   fields = { groups = { items = { order = { "group", "occupied", "free", "total" } } } } },
                        dtus = { order = { "total", "offline" }, fields = { offline = { items = { order = { "sn", "host", "updated_at" } } } } } } }
S.error = { order = { "kind", "message", "status", "code", "request_id", "server_string_to_sign", "client_string_to_sign" } }
S.verify = { order = { "valid", "canonical", "reason", "message", "kind", "device", "sn" } }
S.discover = { order = { "valid", "rules", "matches", "tried", "ruled_out", "sign_form", "canonical", "note", "reason", "message" },
               fields = { rules = { items = {} }, matches = { items = { order = { "name", "secret_index", "undetermined" } } },
                          tried = { items = {} }, ruled_out = { items = {} } } }
S.sign = { order = { "string_to_sign", "signed_headers", "signature", "headers" }, fields = { signed_headers = { items = {} } } }
S.faults = { items = { order = { "kind", "next", "share", "endpoint", "status", "code", "latency", "retry_after", "message", "after" } } }
S.fault = S.faults.items
S.sns = { items = {} }
M.SHAPES = S
-- JSON text is UTF-8, and a strict reader refuses a line that is not: the C
-- decoder lets such bytes through from a body, and kinot.json writes a
-- string's bytes as they are, so the output shows each byte of invalid
-- UTF-8 as U+FFFD (inside a JSON string only: everything else is ASCII)
local REPLACEMENT = "\239\191\189" -- U+FFFD

-- s with each byte of invalid UTF-8 as U+FFFD: JSON text is UTF-8, and a
-- strict reader refuses the line otherwise (the C decoder lets such bytes
-- through from a body)
local function valid_utf8(s)
  if not s:find("[\128-\255]") then return s end
  local out, i, n, from = {}, 1, #s, 1
  while i <= n do
    local b = byte(s, i)
    if b < 0x80 then
      i = i + 1
    else
      local len = utf8_at(s, i, b)
      if len then i = i + len
      else
        out[#out + 1] = s:sub(from, i - 1)
        out[#out + 1] = REPLACEMENT
        i = i + 1
        from = i
      end
    end
  end
  if from == 1 then return s end
  out[#out + 1] = s:sub(from)
  return concat(out)
end
M.valid_utf8 = valid_utf8

-- NaN and inf, which JSON cannot carry, can only come from the platform's
-- answer or a body (1e400 decodes to inf): the answer is refused as
-- undecodable (kind decode, exit 3), naming where, not taken for a usage
-- error
local function not_finite(x, where, depth)
  if type(x) == "number" and (x ~= x or x == math.huge or x == -math.huge) then
    return where .. " (" .. tostring(x) .. ")"
  end
  if type(x) ~= "table" or depth > 1000 then return nil end
  for k, y in pairs(x) do
    local found = not_finite(y, where .. (type(k) == "string" and ("." .. k) or ("[" .. tostring(k) .. "]")), depth + 1)
    if found then return found end
  end
end

--- json_text(v[, shape]) -> one line of JSON, kinot.json's: keys in the
-- shape's order (a name in M.SHAPES, or a shape), the rest sorted; what
-- JSON cannot carry raises misuse naming where in the output it is
function M.json_text(v, shape)
  if type(shape) == "string" then shape = assert(S[shape], "no JSON shape " .. shape) end
  local ok, text = pcall(json.encode, v, shape, "output")
  if ok then return valid_utf8(text) end
  local where = not_finite(v, "", 1)
  if where then
    error(require("kinot.errors").new("decode", "the answer holds a number JSON cannot carry, at " ..
      where:gsub("^%.", "")), 0)
  end
  error(text, 0)
end

function M:emit_json(v, shape)
  self.out:write(M.json_text(v, shape), "\n")
end

-- ------------------------------------------------------------ help

--- examples(lines[, note]) -> the epilog of a command's --help: "Examples:"
-- and the lines, indented, then the note
function M.examples(lines, note)
  local t = { "Examples:" }
  for _, l in ipairs(lines) do t[#t + 1] = "  " .. l end
  if note then t[#t + 1] = "" t[#t + 1] = note end
  return concat(t, "\n")
end

-- ------------------------------------------------------------ failures

--- failure(doc, text): what went wrong, on stderr: with --json (or --jsonl) the
-- object doc on one line, else text, which starts "kinot: " once (escaped,
-- its own line breaks kept)
function M:failure(doc, text)
  if self.json or self.jsonl then
    self.err:write(M.json_text(doc, "error"), "\n")
    return
  end
  text = M.escape(text, true)
  -- a progress bar drawn and not finished (a scan stopped midway): cleared first
  if self.bar_open and self.tty_err then self.err:write("\r\27[K") end
  self.bar_open = false
  if self.color and self.tty_err then text = text:gsub("^kinot: ", "\27[31mkinot: \27[0m", 1) end
  self.err:write(text, "\n")
end

--- progress(done, total, label): a bar on stderr, only on a terminal
function M:progress(done, total, label)
  if not self.tty_err or self.json or not total or total == 0 then return end
  local cols = 30
  local filled = math.floor(cols * done / total)
  self.err:write(string.format("\r%s [%s%s] %d/%d pages", label, string.rep("#", filled),
    string.rep(".", cols - filled), done, total))
  if done >= total then self.err:write("\r" .. string.rep(" ", cols + #label + 24) .. "\r") end
  self.bar_open = done < total
  self.err:flush()
end

return M
