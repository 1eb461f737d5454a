-- Iterating a whole fleet across pages (`each_locker`, `each_sensor`) in
-- constant memory: at most `concurrency` pages are held at once.  We check
-- that what comes back adds up, and raise when it does not instead of
-- silently skipping or repeating devices.
--
-- The reference leaves open how `offset` is numbered (its bound
-- `0<=offset<=(count/limit)+1` fits several readings), so the client's
-- `paging` option names the reading: "page0" (a page index from 0), "page1"
-- (a page index from 1), "rows" (a row offset), or "auto" (the default),
-- which asks the platform once per client (M.probe) and remembers the answer.
local errors = require "kinot.errors"

local M = {}
local ceil, min = math.ceil, math.min

M.READINGS = { page0 = "a page index from 0", page1 = "a page index from 1", rows = "a row offset" }
M.PROBE_LIMIT = 10

--- offset_of(reading, index, limit) -> the platform's `offset` for the page
-- numbered `index` (from 0) under that reading
function M.offset_of(reading, index, limit)
  if reading == "page1" then return index + 1 end
  if reading == "rows" then return index * limit end
  return index
end

local function call(path, offset, limit)
  return { method = "GET", path = path, idempotent = true,
           query = { { "offset", tostring(offset) }, { "limit", tostring(limit) } } }
end

local function changed(msg)
  error(errors.new("api", "the fleet changed while paging: " .. msg .. "; start the iteration again",
    { fleet_changed = true }), 0)
end

local function sns_of(objs)
  local out = {}
  for i = 1, min(#objs, 4) do out[i] = tostring(objs[i].sn) end
  return "[" .. table.concat(out, ",") .. (#objs > 4 and ",..." or "") .. "]"
end

--- probe(client, path) -> reading | nil (the answers fit every reading)
-- Two small pages, asked together: A = offset 0, B = offset 1, limit 10.
--   page1: B is A (offset 0 read as page 1), or A is empty while count > 0,
--          or offset 0 is refused (code ~= 0) while offset 1 is answered
--   rows:  B is A shifted by one device (B[i] is A[i+1])
--   page0: B shares no device with A and holds min(10, count - 10) of them
-- With count <= 1 the readings answer alike (nothing to tell, nothing to
-- skip or repeat): nil, and nothing is remembered.  Answers that fit no
-- reading raise (the fleet changed between the two, or the platform pages
-- some other way).
function M.probe(client, path)
  local request = require "kinot.request"
  local L = M.PROBE_LIMIT
  local r = request.perform_many(client, { call(path, 0, L), call(path, 1, L) })
  if not r[1][1] and r[1][2].kind == "api" and r[2][1] then return "page1" end
  for i = 1, 2 do
    if not r[i][1] then error(r[i][2], 0) end
  end
  local a, b = r[1][1], r[2][1]
  local count = tonumber(a.count)
  if not count then error(errors.new("decode", "a page came back without a count"), 0) end
  if tonumber(b.count) ~= count then changed("count went from " .. count .. " to " .. tostring(b.count)) end
  local ao, bo = a.objects or {}, b.objects or {}
  if #ao == 0 and count > 0 then return "page1" end
  if count <= 1 and #bo == 0 then return nil end
  local same = #ao == #bo and #ao > 0
  for i = 1, #ao do
    if not bo[i] or bo[i].sn ~= ao[i].sn then same = false break end
  end
  if same then return "page1" end
  local shifted = #ao >= 2 and #bo >= #ao - 1
  for i = 1, shifted and #ao - 1 or 0 do
    if bo[i].sn ~= ao[i + 1].sn then shifted = false break end
  end
  if shifted then return "rows" end
  local seen = {}
  for i = 1, #ao do seen[ao[i].sn] = true end
  local disjoint = #ao == min(L, count) and #bo == math.max(0, min(L, count - L))
  for i = 1, #bo do
    if seen[bo[i].sn] then disjoint = false break end
  end
  if disjoint then return "page0" end
  error(errors.new("api", "cannot tell how the platform numbers `offset`: with limit=" .. L .. " and count=" .. count ..
    ", offset=0 gave " .. sns_of(ao) .. " and offset=1 gave " .. sns_of(bo) ..
    " (the fleet may have changed meanwhile: try again); or set paging = \"page0\", \"page1\" or \"rows\" in kinot.new",
    { paging = "auto" }), 0)
end

--- reading(client, path) -> the reading to use, and whether it is only a
-- guess (auto, and the platform's answers fitted every reading)
local function reading_of(client, path)
  if client.paging ~= "auto" then return client.paging, false end
  if client.paging_found then return client.paging_found, false end
  local found = M.probe(client, path)
  if found then
    client.paging_found = found
    return found, false
  end
  return "page0", true
end

--- iterate(client, path, limit, concurrency, on_page) -> iterator over every device
function M.iterate(client, path, limit, concurrency, on_page)
  local request = require "kinot.request"
  local forced = client.paging ~= "auto"
  local reading, guess -- found on the first call of the iterator
  local count, pages
  local buffer, bi = {}, 0         -- devices of the pages in hand
  local next_page = 0
  local prev_sns = {}               -- sn set of the page before: bounded by limit
  local done_pages = 0

  -- a page that does not add up: a paging mix-up, or the fleet changed?
  -- The platform is asked again (M.probe); a reading other than ours names
  -- the mix-up and the option, otherwise the fleet changed.
  local function diagnose(msg)
    local ok, found = pcall(M.probe, client, path)
    if ok and found and found ~= reading then
      if not forced then client.paging_found = found end
      error(errors.new("api", "paging mismatch: the client read `offset` as " .. M.READINGS[reading] ..
        (forced and (" (option paging = \"" .. reading .. "\")") or " (found by paging = \"auto\")") ..
        " but the platform reads it as " .. M.READINGS[found] .. " (" .. msg .. "); set paging = \"" .. found ..
        "\" or \"auto\" in kinot.new, and start the iteration again", { paging = reading, platform_paging = found }), 0)
    end
  end
  local function anomaly(msg)
    diagnose(msg)
    changed(msg)
  end

  local function check_page(page, doc)
    local objs = doc.objects or {}
    local c = tonumber(doc.count)
    if not c then error(errors.new("decode", "a page came back without a count"), 0) end
    if count and c ~= count then changed("count went from " .. count .. " to " .. c) end
    count = c
    pages = pages or ceil(c / limit)
    local expected = page < pages - 1 and limit or (c - (pages - 1) * limit)
    if pages == 0 then expected = 0 end
    if #objs ~= expected then
      anomaly("page " .. page .. " held " .. #objs .. " devices where " .. expected .. " were due")
    end
    local sns = {}
    for i = 1, #objs do
      local sn = objs[i].sn
      if prev_sns[sn] or sns[sn] then anomaly("device " .. tostring(sn) .. " came twice") end
      sns[sn] = true
    end
    prev_sns = sns
    done_pages = done_pages + 1
    if on_page then on_page(done_pages, pages) end
    return objs
  end

  local function fill()
    buffer, bi = {}, 0
    if not reading then reading, guess = reading_of(client, path) end
    if pages and next_page >= pages then return false end
    if guess and next_page > 0 then
      -- the fleet held at most one device when we asked; it grew since
      local found = M.probe(client, path)
      if not found then changed("count went from " .. count .. " to more") end
      reading, guess = found, false
      client.paging_found = found
    end
    local batch = {}
    local n = pages and min(concurrency, pages - next_page) or 1
    for i = 1, n do batch[i] = call(path, M.offset_of(reading, next_page + i - 1, limit), limit) end
    local results = request.perform_many(client, batch)
    for i = 1, n do
      local doc, err = results[i][1], results[i][2]
      if not doc then
        -- an offset the platform refuses (its bound is (count/limit)+1) may be ours misread
        if err.kind == "api" then diagnose("offset " .. batch[i].query[1][2] .. " refused: " .. tostring(err.api_message or err.message)) end
        error(err, 0)
      end
      local objs = check_page(next_page + i - 1, doc)
      for j = 1, #objs do buffer[#buffer + 1] = objs[j] end
    end
    next_page = next_page + n
    return true
  end

  return function()
    while bi >= #buffer do
      if not fill() then return nil end
    end
    bi = bi + 1
    return buffer[bi]
  end
end

return M
