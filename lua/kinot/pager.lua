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

-- the stream's driver: inside nginx (a phase with light threads) a light
-- thread, which pages while the caller's loop runs; elsewhere a coroutine
-- the iterator resumes (curl's transfers go on in its turns)
local THREAD_PHASES = { timer = true, content = true, rewrite = true, access = true }
local function nginx_threads()
  local ngx = rawget(_G, "ngx")
  if not (ngx and ngx.thread and ngx.get_phase and THREAD_PHASES[ngx.get_phase()]) then return nil end
  local ok, semaphore = pcall(require, "ngx.semaphore")
  return ok and ngx or nil, ok and semaphore or nil
end

--- iterate(client, path, limit, concurrency, on_page) -> iterator, nil, nil, closer
-- over every device, in order.  The pages go through request.stream (the
-- transport's concurrent path: curl-multi, or nginx light threads), a
-- sliding window: `concurrency` pages in flight or waiting their turn, the
-- next asked as soon as one is handed over (no round waits for its
-- slowest), at most `concurrency` held at once.  Page 0 goes alone (its
-- `count` sizes the list): no page past the end is asked while the count
-- holds.  Each page is checked, retried and handed over here, in the
-- caller's turn; the stream only asks and keeps the answers.  It ends
-- whenever it has nothing out and no room (the caller is behind, or gone:
-- a loop left by `break`) and starts again from where it was when the
-- caller comes back.  closer:close() (the generic for's closing value
-- under Lua 5.4: a `break` calls it) ends the pages still out.
function M.iterate(client, path, limit, concurrency, on_page)
  local request = require "kinot.request"
  local retry = require "kinot.request.retry"
  local forced = client.paging ~= "auto"
  local reading, guess -- found on the first call of the iterator
  local count, pages
  local buffer, bi = {}, 0         -- devices of the page in hand
  local next_page = 0               -- the next page to ask for
  local turn = 0                    -- the next page to hand over
  local answers = {}                -- page -> {doc, err, call}, come before their turn
  local index_of = {}               -- call -> page
  local prev_sns = {}               -- sn set of the page before: bounded by limit
  local done_pages = 0
  local finished = false
  local STOP = {}                   -- raised in take: ends the stream, kills what is out
  local ngx, semaphore = nginx_threads()
  local ready = ngx and semaphore.new(0) -- posted by the stream thread: an answer, or its end
  local runner, running, stopping, stream_err = nil, false, false, nil
  local poke -- nginx: wakes the stream thread (room for a page)

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

  -- take(free): the next pages, while the window (the pages asked and not
  -- yet handed over) has room; page 0 alone, until its count is known.
  -- With no room: asked again when a page out comes in, or (nginx) when
  -- the caller hands one over (poke); with nothing out, the stream ends.
  local function take(free)
    if stopping then error(STOP, 0) end
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

  -- on_answer: kept for its turn; the caller is told (nginx) or given the
  -- hand (a coroutine's yield) when the page whose turn it is has come
  local function on_answer(asked, doc, err)
    answers[index_of[asked]] = { doc, err, asked }
    index_of[asked] = nil
    if ready then ready:post(1)
    elseif answers[turn] and not stopping then coroutine.yield() end
  end

  local function run()
    local ok, e = pcall(request.stream, client, concurrency, take, on_answer, function(p) poke = p end)
    if not ok and e ~= STOP then stream_err = e end
    running = false
    if ready then ready:post(1) end
  end

  local function start()
    running = true
    if ngx then runner = ngx.thread.spawn(run) else runner = coroutine.create(run) end
  end

  -- the caller's turn: wait for an answer or the stream's end
  local function step()
    if ngx then ready:wait(3600) return end
    local ok, e = coroutine.resume(runner)
    if not ok then running, stream_err = false, e end
  end

  -- ends the stream: what is out is killed or closed (nginx: when the
  -- first of them ends, at most one request's time; a script: at once)
  local function stop()
    finished = true
    buffer, bi = {}, 0
    if not runner then return end
    stopping = true
    if running and poke then poke() end -- (take raises STOP at once)
    if ngx then
      while running do ready:wait(3600) end
      ngx.thread.wait(runner) -- (dead: reaped at once)
    else
      -- (take raises STOP: the transfers out are closed).  Resumed until it
      -- ends: once was not enough when more answers than one had come
      -- together (on_answer yielded again for the next in turn, and the
      -- stream, its multi and its connections stayed open until the GC)
      while coroutine.status(runner) == "suspended" do coroutine.resume(runner) end
    end
    runner = nil
  end

  local function fail(err, msg)
    stop()
    if msg then diagnose(msg) end
    error(err, 0)
  end
  local function anomaly(msg)
    local _, err = pcall(changed, msg)
    fail(err, msg)
  end

  local function check_page(page, doc)
    local objs = doc.objects or {}
    local c = tonumber(doc.count)
    if not c then fail(errors.new("decode", "a page came back without a count")) end
    if count and c ~= count then
      local _, err = pcall(changed, "count went from " .. count .. " to " .. c)
      fail(err)
    end
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

  -- the next page's devices, in turn | nil at the end
  local function next_objs()
    if not reading then reading, guess = reading_of(client, path) end
    while true do
      local a = answers[turn]
      if a then
        answers[turn] = nil
        local doc, err = a[1], a[2]
        if not doc and err.kind ~= "unknown_outcome" and retry.alone(err) then
          -- a failed page goes again alone, under the full retry policy
          doc, err = request.perform(client, a[3])
          if err then err.attempts = err.attempts + 1 end
        end
        if not doc then
          -- an offset the platform refuses (its bound is (count/limit)+1) may be ours misread
          fail(err, err.kind == "api" and ("offset " .. a[3].query[1][2] .. " refused: " ..
            tostring(err.api_message or err.message)) or nil)
        end
        local objs = check_page(turn, doc)
        turn = turn + 1
        if running and poke then poke() end
        return objs
      end
      if stream_err then fail(stream_err) end
      if pages and turn >= math.max(pages, 1) then
        stop()
        return nil
      end
      if running then
        step()
      else
        if runner and ngx then ngx.thread.wait(runner) end -- (the last stream thread, dead: reaped)
        start()
        if not ngx then step() end
      end
    end
  end

  local closer = setmetatable({}, { __close = function(self) self:close() end, __index = {
    close = function() if not finished then stop() end end } })

  return function()
    while bi >= #buffer do
      if finished then return nil end
      local objs = next_objs()
      if not objs then return nil end
      buffer, bi = objs, 0
    end
    bi = bi + 1
    return buffer[bi]
  end, nil, nil, closer
end

return M
