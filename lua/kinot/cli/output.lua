-- How the CLI prints: aligned tables for people (colour only on a
-- terminal), JSON for scripts, errors on stderr.
local json = require "kinot.json"

local M = {}

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

local COLORS = { red = 31, green = 32, yellow = 33, bold = 1, dim = 2 }
function M:paint(color, s)
  if not self.color then return s end
  return "\27[" .. COLORS[color] .. "m" .. s .. "\27[0m"
end

function M:print(...)
  self.out:write(table.concat({ ... }, ""), "\n")
end

-- display width of a UTF-8 string (counts code points)
local function width(s)
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

--- table(rows, columns): columns = { {key, title}, ... }
function M:table(rows, columns)
  local widths, cells = {}, {}
  for c, col in ipairs(columns) do widths[c] = width(col[2]) end
  for r, row in ipairs(rows) do
    cells[r] = {}
    for c, col in ipairs(columns) do
      local v = row[col[1]]
      local s = v == nil and "" or v == json.null and "" or tostring(v)
      if type(v) == "number" and math.type and math.type(v) == "float" and v == math.floor(v) then s = string.format("%d", v) end
      cells[r][c] = s
      if width(s) > widths[c] then widths[c] = width(s) end
    end
  end
  local head = {}
  for c, col in ipairs(columns) do head[c] = col[2] .. string.rep(" ", widths[c] - width(col[2])) end
  self:print(self:paint("bold", (table.concat(head, "  "):gsub("%s+$", ""))))
  for r = 1, #rows do
    local line = {}
    for c = 1, #columns do
      local s = cells[r][c]
      local pad = string.rep(" ", widths[c] - width(s))
      line[c] = (type(rows[r][columns[c][1]]) == "number") and (pad .. s) or (s .. pad)
    end
    self:print((table.concat(line, "  "):gsub("%s+$", "")))
  end
end

function M:kv(pairs_list)
  local w = 0
  for _, p in ipairs(pairs_list) do if width(p[1]) > w then w = width(p[1]) end end
  for _, p in ipairs(pairs_list) do
    self:print(self:paint("dim", p[1] .. ":" .. string.rep(" ", w - width(p[1]) + 1)), tostring(p[2]))
  end
end

function M:emit_json(v)
  self.out:write(json.encode(v), "\n")
end

--- failure(doc, text): what went wrong, on stderr: with --json (or --jsonl) the
-- object doc on one line, else text, which starts "kinot: " once
function M:failure(doc, text)
  if self.json or self.jsonl then
    self.err:write(json.encode(doc), "\n")
    return
  end
  if self.color and self.tty_err then text = text:gsub("^kinot: ", "\27[31mkinot: \27[0m", 1) end
  self.err:write(text, "\n")
end

function M:error(msg)
  self.err:write(self.color and isatty(2) and ("\27[31mkinot: \27[0m") or "kinot: ", msg, "\n")
end

--- progress(done, total, label): a bar on stderr, only on a terminal
function M:progress(done, total, label)
  if not self.tty_err or self.json or not total or total == 0 then return end
  local cols = 30
  local filled = math.floor(cols * done / total)
  self.err:write(string.format("\r%s [%s%s] %d/%d pages", label, string.rep("#", filled),
    string.rep(".", cols - filled), done, total))
  if done >= total then self.err:write("\r" .. string.rep(" ", cols + #label + 24) .. "\r") end
  self.err:flush()
end

return M
