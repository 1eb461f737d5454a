-- Where each device is: a user's file mapping serials to zone / level / bay,
-- CSV or JSON, read once.  A device's group (what occupancy is counted by)
-- is its place's `group` when the file names one, else the group_by
-- columns it has, joined by "/" (default zone and level: "A/2").
--
--   CSV   a header line naming the columns (sn first or anywhere; zone,
--         level, bay, group, any others kept as they are), then a row a device:
--           sn,zone,level,bay
--           419600001,A,1,A1-001
--   JSON  {"419600001": {"zone": "A", "level": 1, "bay": "A1-001"}, ...}
--         or [{"sn": 419600001, "zone": "A", ...}, ...]
local json = require "kinot.json"
local errors = require "kinot.errors"
local file = require "kinot.file"

local M = {}

local type, tostring, tonumber, pairs, ipairs, concat = type, tostring, tonumber, pairs, ipairs, table.concat
local misuse = errors.misuse

M.GROUP_BY = { "zone", "level" }

local function split_csv_line(line)
  local out, i, n = {}, 1, #line
  while i <= n + 1 do
    local c = line:sub(i, i)
    if c == '"' then
      local buf, j = {}, i + 1
      while true do
        local q = line:find('"', j, true)
        if not q then misuse("kinot.fleet groups: an unclosed quote in CSV line: " .. line:sub(1, 60)) end
        buf[#buf + 1] = line:sub(j, q - 1)
        if line:sub(q + 1, q + 1) == '"' then
          buf[#buf + 1] = '"'
          j = q + 2
        else
          i = q + 1
          local after = line:sub(i, i)
          if after ~= "," and after ~= "" then
            misuse("kinot.fleet groups: text after a closing quote in CSV line: " .. line:sub(1, 60))
          end
          break
        end
      end
      out[#out + 1] = concat(buf)
      i = i + 1 -- the comma
    else
      local comma = line:find(",", i, true) or n + 1
      out[#out + 1] = line:sub(i, comma - 1):match("^%s*(.-)%s*$")
      i = comma + 1
    end
  end
  return out
end

local function from_csv(text, where)
  local rows, header = {}, nil
  local ln = 0
  -- CRLF, and CR alone (an old spreadsheet's export), end a line as LF does
  text = text:gsub("\r\n?", "\n")
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    ln = ln + 1
    if line:match("%S") and not line:match("^%s*#") then
      local cells = split_csv_line(line)
      if not header then
        header = {}
        for i, name in ipairs(cells) do header[i] = name:lower() end
      else
        local row = {}
        for i, name in ipairs(header) do
          if cells[i] ~= nil and cells[i] ~= "" then row[name] = cells[i] end
        end
        row.line = ln
        rows[#rows + 1] = row
      end
    end
  end
  if not header then misuse("kinot.fleet groups: " .. where .. " is empty (a header line sn,zone,level,bay is wanted)") end
  local has_sn = false
  for _, name in ipairs(header) do has_sn = has_sn or name == "sn" end
  if not has_sn then
    misuse("kinot.fleet groups: " .. where .. " has no sn column (its header line: " .. concat(header, ","):sub(1, 60) ..
      "; sn,zone,level,bay is wanted)")
  end
  return rows
end

local function from_json(text, where)
  local doc, why = json.decode(text)
  if type(doc) ~= "table" then misuse("kinot.fleet groups: " .. where .. " is not JSON (" .. tostring(why) .. ")") end
  if #doc > 0 then return doc end
  local rows = {}
  for sn, place in pairs(doc) do
    if type(place) ~= "table" then misuse("kinot.fleet groups: " .. where .. ": " .. tostring(sn) .. " must map to an object") end
    local row = { sn = sn }
    for k, v in pairs(place) do row[k] = v end
    rows[#rows + 1] = row
  end
  return rows
end

--- load(source, group_by) -> { [sn] = place } (place: zone, level, bay ...,
-- and group), groups (sorted list of the group names).  source: a file
-- path (.json, or CSV), or a table already read (either JSON shape).
function M.load(source, group_by)
  group_by = group_by or M.GROUP_BY
  local rows, where
  if type(source) == "string" then
    where = source
    local text, err = file.read(source)
    if not text then misuse("kinot.fleet groups: cannot read " .. source .. " (" .. tostring(err) .. ")") end
    text = text:gsub("^\239\187\191", "") -- a UTF-8 BOM (a spreadsheet's export) is not the first column's name
    if source:lower():match("%.json$") or text:match("^%s*[%[{]") then
      rows = from_json(text, where)
    else
      rows = from_csv(text, where)
    end
  elseif type(source) == "table" then
    where = "the groups table"
    rows = #source > 0 and source or from_json(json.encode(source), where)
  else
    misuse("kinot.fleet: groups must be a file path or a table (got " .. type(source) .. ")")
  end
  local map, seen, names = {}, {}, {}
  local line_of = {}
  for i, row in ipairs(rows) do
    if type(row) ~= "table" then
      misuse("kinot.fleet groups: " .. where .. " row " .. i .. ": each row must be an object (got " .. type(row) .. ")")
    end
    local at = row.line and (" line " .. row.line) or (" row " .. i)
    local sn = tonumber(row.sn)
    if not sn or sn ~= math.floor(sn) or sn < 1 or sn >= 2 ^ 53 then
      misuse("kinot.fleet groups: " .. where .. (row.line and (" line " .. row.line) or "") ..
        ": sn must be a serial (got " .. tostring(row.sn) .. ")")
    end
    if line_of[sn] then
      misuse("kinot.fleet groups: " .. where .. ": serial " .. string.format("%d", sn) .. " is given twice (" ..
        line_of[sn] .. " and" .. at .. ")")
    end
    line_of[sn] = at
    local place = {}
    for k, v in pairs(row) do
      if k ~= "sn" and k ~= "line" then
        if type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then
          misuse("kinot.fleet groups: " .. where .. at .. ": " .. tostring(k) .. " must be a text or a number (got " ..
            (type(v) == "table" and "a list or object" or type(v)) .. ")")
        end
        place[k] = type(v) == "number" and json.encode(v) or tostring(v)
      end
    end
    local group = place.group
    if not group then
      local parts = {}
      for _, col in ipairs(group_by) do
        if place[col] then parts[#parts + 1] = place[col] end
      end
      if #parts > 0 then group = concat(parts, "/") end
    end
    -- | and @ part the flags a store matches; a control character (a newline
    -- above all) would cut the shared dict's "flags\nrecord" text short
    if group and group:find("[|@%c]") then
      misuse("kinot.fleet groups: " .. where .. ": a group name cannot hold |, @ or a control character (" ..
        group:gsub("%c", "?") .. ")")
    end
    place.group = group
    map[sn] = place
    if group and not seen[group] then
      seen[group] = true
      names[#names + 1] = group
    end
  end
  table.sort(names)
  return map, names
end

return M
