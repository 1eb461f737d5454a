-- The report's charts as inline SVG (kinot.report.html puts them in the
-- page): a histogram (vertical bars) and horizontal bars, stacked when a row
-- has parts.  No script, no external reference: each is one <svg> element.
-- Lengths are proportional to the counts on an axis from 0 to a round
-- number at or above the largest; each bar carries its exact count
-- (data-count) and a <title> a reader's pointer shows.
local escape = require "kinot.report.escape"

local M = {}

local format, concat, max = string.format, table.concat, math.max

-- a length as written: 2 decimals at most, no trailing zeros ("12.5", "40")
local function num(x)
  local s = format("%.2f", x):gsub("(%.%d-)0+$", "%1"):gsub("%.$", "")
  return s == "-0" and "0" or s
end

--- axis(top) -> axis_max, step: round ticks (1, 2 or 5 times a power of
-- ten, whole numbers) covering 0..top in at most 5 steps; 0..1 for no data
function M.axis(top)
  if top <= 0 then return 1, 1 end
  local step = 1
  while true do
    for _, m in ipairs { 1, 2, 5 } do
      local s = m * step
      if top / s <= 5 then return s * math.ceil(top / s), s end
    end
    step = step * 10
  end
end

local function text(x, y, s, attrs)
  return format('<text x="%s" y="%s"%s>%s</text>', num(x), num(y), attrs and (" " .. attrs) or "", escape(s))
end

local function open(width, height, label, class)
  return format('<svg class="chart %s" width="%d" height="%d" ' ..
    'viewBox="0 0 %d %d" role="img" aria-label="%s"><title>%s</title>', class, width, height, width, height,
    escape(label), escape(label))
end

--- histogram(o) -> svg text.  o: title, x_label, y_label, class, edges
-- (the n-1 boundary labels between n bars), bars = { {label, count} ... },
-- width, height
function M.histogram(o)
  local W, H = o.width or 560, o.height or 260
  local left, right, top, bottom = 52, 12, 14, 50
  local pw, ph = W - left - right, H - top - bottom
  local biggest = 0
  for _, b in ipairs(o.bars) do biggest = max(biggest, b.count) end
  local amax, step = M.axis(biggest)
  local out = { open(W, H, o.title, o.class or "histogram") }
  -- grid and y ticks
  for v = 0, amax, step do
    local y = top + ph - ph * v / amax
    out[#out + 1] = format('<line class="grid" x1="%d" y1="%s" x2="%d" y2="%s"/>', left, num(y), left + pw, num(y))
    out[#out + 1] = text(left - 6, y + 4, format("%d", v), 'class="tick" text-anchor="end"')
  end
  local n = #o.bars
  local slot = pw / max(n, 1)
  for i, b in ipairs(o.bars) do
    local h = ph * b.count / amax
    local x = left + (i - 1) * slot + slot * 0.08
    out[#out + 1] = format('<rect class="bar" x="%s" y="%s" width="%s" height="%s" data-label="%s" data-count="%d">' ..
      '<title>%s: %d</title></rect>', num(x), num(top + ph - h), num(slot * 0.84), num(h), escape(b.label), b.count,
      escape(b.label), b.count)
    if b.count > 0 then
      out[#out + 1] = text(x + slot * 0.42, top + ph - h - 3, format("%d", b.count), 'class="value" text-anchor="middle"')
    end
  end
  for i, e in ipairs(o.edges or {}) do
    local x = left + i * slot
    out[#out + 1] = format('<line class="axis" x1="%s" y1="%d" x2="%s" y2="%d"/>', num(x), top + ph, num(x), top + ph + 4)
    out[#out + 1] = text(x, top + ph + 16, e, 'class="tick" text-anchor="middle"')
  end
  out[#out + 1] = format('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>', left, top + ph, left + pw, top + ph)
  out[#out + 1] = format('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>', left, top, left, top + ph)
  out[#out + 1] = text(left + pw / 2, H - 8, o.x_label, 'class="label" text-anchor="middle"')
  out[#out + 1] = text(14, top + ph / 2, o.y_label, format('class="label" text-anchor="middle" transform="rotate(-90 14 %s)"',
    num(top + ph / 2)))
  if biggest == 0 then
    out[#out + 1] = text(left + pw / 2, top + ph / 2, "no readings", 'class="empty" text-anchor="middle"')
  end
  out[#out + 1] = "</svg>"
  return concat(out)
end

local function shorten(s, n)
  s = tostring(s)
  if #s <= n then return s end
  local cut = n - 1
  -- not inside a UTF-8 sequence
  while cut > 1 and s:byte(cut + 1) and s:byte(cut + 1) >= 0x80 and s:byte(cut + 1) < 0xC0 do cut = cut - 1 end
  return s:sub(1, cut) .. "\226\128\166"
end

--- hbars(o) -> svg text: a row a thing, its bar in parts side by side.
-- o: title, x_label, class, parts = { {name, class} ... } (the legend),
-- rows = { {label, counts = {n per part}, note} ... }, width
function M.hbars(o)
  local W = o.width or 560
  local row_h, bar_h = 24, 15
  local label_w = 150
  local left, right, top, bottom = label_w + 8, 96, 26, 40
  local pw = W - left - right
  local nrows = #o.rows
  local H = top + max(nrows, 1) * row_h + bottom
  local biggest = 0
  for _, r in ipairs(o.rows) do
    local t = 0
    for _, c in ipairs(r.counts) do t = t + c end
    biggest = max(biggest, t)
  end
  local amax, step = M.axis(biggest)
  local out = { open(W, H, o.title, o.class or "hbars") }
  -- legend
  local lx = left
  for _, p in ipairs(o.parts) do
    out[#out + 1] = format('<rect class="swatch %s" x="%s" y="6" width="10" height="10"/>', p.class, num(lx))
    out[#out + 1] = text(lx + 14, 15, p.name, 'class="legend"')
    lx = lx + 24 + 7 * #p.name
  end
  local base = top + nrows * row_h
  for v = 0, amax, step do
    local x = left + pw * v / amax
    out[#out + 1] = format('<line class="grid" x1="%s" y1="%d" x2="%s" y2="%d"/>', num(x), top, num(x), base)
    out[#out + 1] = text(x, base + 14, format("%d", v), 'class="tick" text-anchor="middle"')
  end
  for i, r in ipairs(o.rows) do
    local y = top + (i - 1) * row_h + (row_h - bar_h) / 2
    out[#out + 1] = format('<g class="row" data-label="%s">', escape(r.label))
    out[#out + 1] = format('<title>%s</title>', escape(r.label .. ": " .. (r.note or "")))
    out[#out + 1] = text(left - 8, y + bar_h - 3, shorten(r.label, 24), 'class="name" text-anchor="end"')
    local x = left
    for j, c in ipairs(r.counts) do
      local w = pw * c / amax
      out[#out + 1] = format('<rect class="seg %s" x="%s" y="%s" width="%s" height="%d" data-part="%s" data-count="%d"/>',
        o.parts[j].class, num(x), num(y), num(w), bar_h, escape(o.parts[j].name), c)
      x = x + w
    end
    out[#out + 1] = text(x + 6, y + bar_h - 3, r.note or "", 'class="value"')
    out[#out + 1] = "</g>"
  end
  out[#out + 1] = format('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>', left, top, left, base)
  out[#out + 1] = format('<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>', left, base, left + pw, base)
  out[#out + 1] = text(left + pw / 2, H - 6, o.x_label, 'class="label" text-anchor="middle"')
  if nrows == 0 then
    out[#out + 1] = text(left + pw / 2, top + row_h / 2 + 4, o.empty or "nothing to show", 'class="empty" text-anchor="middle"')
  end
  out[#out + 1] = "</svg>"
  return concat(out)
end

M.num = num

return M
