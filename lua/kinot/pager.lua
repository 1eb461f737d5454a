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

--- iterate(client, path, limit, concurrency, on_page) -> iterator, nil, nil, closer
-- over every device, in order.  The pages go through request.stream (the
-- transport's concurrent path: curl-multi, or nginx light threads), run in
-- a coroutine that hands each page over as it comes in turn: `concurrency`
-- pages always in flight or waiting for their turn (a sliding window, no
-- round waiting for its slowest), at most `concurrency` held at once.
-- Page 0 goes alone (its `count` sizes the list): no page past the end is
-- asked while the count holds.  closer:close() (the generic for's closing
-- value under Lua 5.4: a `break` calls it) ends the pages still out.
function M.iterate(client, path, limit, concurrency, on_page)
  local request = require "kinot.request"
  local retry = require "kinot.request.retry"
  local forced = client.paging ~= "auto"
  local reading, guess -- found on the first call of the iterator
  local count, pages
  local buffer, bi = {}, 0         -- devices of the page in hand
  local next_page = 0               -- the next page to ask for
  local turn = 0                    -- the next page to hand over
  local answers = {}                -- page -> {doc, err}, come before their turn
  local index_of = {}               -- call -> page
  local prev_sns = {}               -- sn set of the page before: bounded by limit
  local done_pages = 0
  local co, finished = nil, false
  local STOP = {}                   -- raised at the yield to end the stream

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
  -- an anomaly found in the stream ends it first (what is out is killed
  -- or closed), then the iterator asks the platform again, outside it
  local ANOMALY = {}
  local function anomaly(msg, err)
    if not err then
      local ok, e = pcall(changed, msg)
      assert(not ok)
      err = e
    end
    error({ [ANOMALY] = true, msg = msg, err = err }, 0)
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

  -- take(free): the next pages, while the window (the pages asked and not
  -- yet handed over) has room; page 0 alone, until its count is known
  local function take(free)
    local calls = {}
    if next_page > 0 and (pages == nil or next_page >= pages) then return calls end -- (the end, or page 0 out)
    if guess and next_page > 0 then
      -- the fleet held at most one device when we asked; it grew since
      local found = M.probe(client, path)
      if not found then changed("count went from " .. count .. " to more") end
      reading, guess = found, false
      client.paging_found = found
    end
    local last = pages and min(pages, turn + concurrency) or 1
    while #calls < free and next_page < last do
      local c = call(path, M.offset_of(reading, next_page, limit), limit)
      index_of[c] = next_page
      calls[#calls + 1] = c
      next_page = next_page + 1
    end
    return calls
  end

  -- on_answer: kept until its turn; each page whose turn it is is checked
  -- and handed over (the coroutine yields it), in order.  A failed page
  -- goes again alone, under the full retry policy, when its turn comes (as
  -- perform_many's); an error raised here ends the stream (what is still
  -- out is killed or closed by the transport) and the iteration.
  local function on_answer(asked, doc, err)
    answers[index_of[asked]] = { doc, err, asked }
    index_of[asked] = nil
    while answers[turn] do
      local a = answers[turn]
      answers[turn] = nil
      doc, err = a[1], a[2]
      if not doc and err.kind ~= "unknown_outcome" and retry.alone(err) then
        doc, err = request.perform(client, a[3])
        if err then err.attempts = err.attempts + 1 end
      end
      if not doc then
        -- an offset the platform refuses (its bound is (count/limit)+1) may be ours misread
        if err.kind == "api" then
          anomaly("offset " .. a[3].query[1][2] .. " refused: " .. tostring(err.api_message or err.message), err)
        end
        error(err, 0)
      end
      local objs = check_page(turn, doc)
      turn = turn + 1
      if coroutine.yield(objs) == STOP then error(STOP, 0) end
    end
  end

  local function run()
    reading, guess = reading_of(client, path)
    request.stream(client, concurrency, take, on_answer)
  end

  -- closer: ends the pages still out (the coroutine raises STOP at its
  -- yield: the transport kills its light threads or closes its transfers)
  local closer = setmetatable({}, { __close = function(self) self:close() end, __index = {
    close = function()
      if finished or not co then finished = true return end
      finished = true
      buffer, bi = {}, 0
      local ok, err = coroutine.resume(co, STOP)
      if not ok and err ~= STOP then error(err, 0) end
    end } })

  local function next_objs()
    if finished then return nil end
    co = co or coroutine.create(run)
    local ok, objs = coroutine.resume(co)
    if not ok then
      finished = true
      if type(objs) == "table" and objs[ANOMALY] then
        diagnose(objs.msg)
        objs = objs.err
      end
      error(objs, 0)
    end
    if coroutine.status(co) == "dead" then
      finished = true
      return nil
    end
    return objs
  end

  return function()
    while bi >= #buffer do
      local objs = next_objs()
      if not objs then return nil end
      buffer, bi = objs, 0
    end
    bi = bi + 1
    return buffer[bi]
  end, nil, nil, closer
end

return M
