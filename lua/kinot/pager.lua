-- Iterating a whole fleet across pages (`each_locker`, `each_sensor`) in
-- constant memory: at most `concurrency` pages are held at once.  The
-- platform pages by `offset` = page index; we check that what comes back
-- adds up, and raise when the fleet changed under us instead of silently
-- skipping or repeating devices.
local errors = require "kinot.errors"

local M = {}
local ceil, min = math.ceil, math.min

local function changed(msg)
  error(errors.new("api", "the fleet changed while paging: " .. msg .. "; start the iteration again"), 0)
end

--- iterate(client, path, opts) -> iterator over every device
-- opts: limit (10..100), concurrency (>= 1), on_page(done, total)
function M.iterate(client, path, limit, concurrency, on_page)
  local request = require "kinot.request"
  local function call(page)
    return { method = "GET", path = path, idempotent = true,
             query = { { "offset", tostring(page) }, { "limit", tostring(limit) } } }
  end
  local count, pages
  local buffer, bi = {}, 0         -- devices of the pages in hand
  local next_page = 0
  local prev_sns = {}               -- sn set of the page before: bounded by limit
  local done_pages = 0

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
      changed("page " .. page .. " held " .. #objs .. " devices where " .. expected .. " were due")
    end
    local sns = {}
    for i = 1, #objs do
      local sn = objs[i].sn
      if prev_sns[sn] or sns[sn] then changed("device " .. tostring(sn) .. " came twice") end
      sns[sn] = true
    end
    prev_sns = sns
    done_pages = done_pages + 1
    if on_page then on_page(done_pages, pages) end
    return objs
  end

  local function fill()
    buffer, bi = {}, 0
    if pages and next_page >= pages then return false end
    local batch = {}
    local n = pages and min(concurrency, pages - next_page) or 1
    for i = 1, n do batch[i] = call(next_page + i - 1) end
    local results = request.perform_many(client, batch)
    for i = 1, n do
      local doc, err = results[i][1], results[i][2]
      if not doc then error(err, 0) end
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
