-- `kinot report --html FILE`: the report (kinot.cli.report.build's table) as
-- one self-contained HTML page: inline CSS and inline SVG charts
-- (kinot.report.svg), no script, no external reference of any kind, so it
-- reads offline and prints.  Every figure the text report shows is here, in
-- an element carrying data-figure="its path in --json" (a reader, or a
-- spec, finds each one); everything from the platform or a user's file is
-- escaped (kinot.report.escape).
local svg = require "kinot.report.svg"
local escape = require "kinot.report.escape"
local report = require "kinot.cli.report"
local vocabulary = require "kinot.vocabulary"
local redact = require "kinot.redact"
local output = require "kinot.cli.output"
local json = require "kinot.json"

local M = {}

local format, concat = string.format, table.concat

local CSS = [[
:root{--ink:#1d2733;--muted:#5b6776;--line:#d8dee6;--bg:#f4f6f9;--card:#fff;--occ:#3a5a8c;--free:#8cc7a1;
--bat:#2f7ed8;--sig:#7a5cc4;--lock:#c8553d;--sensor:#e8a33d;--bad:#b3261e;--ok:#1e7b45}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;-webkit-print-color-adjust:exact;print-color-adjust:exact}
main{max-width:1180px;margin:0 auto;padding:24px 28px 40px}
header{display:flex;justify-content:space-between;align-items:flex-end;flex-wrap:wrap;gap:8px;
border-bottom:2px solid var(--ink);padding-bottom:10px;margin-bottom:18px}
h1{font-size:24px;margin:0;letter-spacing:.2px}
h2{font-size:16px;margin:0 0 10px}
.meta{color:var(--muted);font-size:12.5px;text-align:right}
.meta code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:var(--ink);word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(138px,1fr));gap:10px;margin-bottom:18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 12px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.6px}
.card .v{font-size:26px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.card .s{color:var(--muted);font-size:12px;font-variant-numeric:tabular-nums}
.card.alert .v{color:var(--bad)}
.card.good .v{color:var(--ok)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:14px;margin-bottom:14px}
section.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px;
margin-bottom:14px;break-inside:avoid;page-break-inside:avoid}
.grid section.panel{margin-bottom:0}
.note{color:var(--muted);font-size:12.5px;margin:6px 0 0}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;margin-top:8px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);font-size:13px;overflow-wrap:anywhere}
th{color:var(--muted);font-weight:600;font-size:11.5px;text-transform:uppercase;letter-spacing:.5px}
td.n,th.n{text-align:right}
svg.chart{display:block;max-width:100%;height:auto;margin:0 auto}
.split{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:18px;align-items:start}
.split table{margin-top:0}
svg .grid{stroke:#e6eaf0;stroke-width:1}
svg .axis{stroke:#8a95a3;stroke-width:1}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:var(--ink)}
svg .tick{font-size:10.5px;fill:var(--muted)}
svg .label{font-size:11.5px;fill:var(--muted)}
svg .value{font-size:10.5px}
svg .legend{font-size:11.5px}
svg .name{font-size:12px}
svg .empty{font-size:13px;fill:var(--muted)}
.battery .bar{fill:var(--bat)}
.signal .bar{fill:var(--sig)}
.occupied{fill:var(--occ)}
.free{fill:var(--free)}
.lock{fill:var(--lock)}
.sensor{fill:var(--sensor)}
.ok{color:var(--ok)}
.bad{color:var(--bad)}
footer{color:var(--muted);font-size:12px;margin-top:18px;text-align:center}
@page{size:A4;margin:12mm}
@media print{body{background:#fff;font-size:11pt}main{max-width:none;padding:0}
.grid{grid-template-columns:1fr 1fr}.split{grid-template-columns:3fr 2fr}.card,section.panel{border-color:#bbb}}
]]

local pct = report.pct

-- a figure: its text, and the path of the number in --json it shows
local function fig(path, v)
  return format('<span data-figure="%s">%s</span>', escape(path), escape(v))
end

local function card(title, value, sub, class)
  return format('<div class="card%s"><div class="k">%s</div><div class="v">%s</div><div class="s">%s</div></div>',
    class and (" " .. class) or "", escape(title), value, sub or "")
end

-- a cell as the text report's table shows it (kinot.cli.output: nil and
-- null as nothing, a number in its field's decimals), escaped
local function cell(field, v)
  if v == nil or v == json.null then return "" end
  if type(v) == "number" then v = output.number_text(field, v) end
  return escape(v)
end

local function table_of(rows, cols)
  local out = { "<table><thead><tr>" }
  for _, c in ipairs(cols) do out[#out + 1] = format('<th%s>%s</th>', c.n and ' class="n"' or "", escape(c[2])) end
  out[#out + 1] = "</tr></thead><tbody>"
  for _, r in ipairs(rows) do
    out[#out + 1] = "<tr>"
    for _, c in ipairs(cols) do
      out[#out + 1] = format('<td%s>%s</td>', c.n and ' class="n"' or "", cell(c[1], r[c[1]]))
    end
    out[#out + 1] = "</tr>"
  end
  out[#out + 1] = "</tbody></table>"
  return concat(out)
end

local function histogram(h, o)
  local bars, edges = {}, {}
  for i, b in ipairs(h.buckets) do
    bars[i] = { label = report.bucket_label(b, o.decimals) .. " " .. h.unit, count = b.count }
    if i > 1 then edges[#edges + 1] = format("%." .. o.decimals .. "f", b.from) end
  end
  return svg.histogram { title = o.title, class = o.class, x_label = o.x_label, y_label = "devices", bars = bars,
                         edges = edges }
end

local function cards(r)
  local L, S = r.locks, r.sensors
  local occ, spaces = L.occupied + S.occupied, L.total + S.total
  local faults = 0
  for _, sec in ipairs { L, S } do for _, n in pairs(sec.faults) do faults = faults + n end end
  local d = r.dtus
  local dtu_value, dtu_sub, dtu_class
  if d.total == 0 then
    dtu_value, dtu_sub = "-", "none checked"
  else
    dtu_value = fig("dtus.offline", #d.offline)
    dtu_sub = "of " .. fig("dtus.total", d.total) .. " checked"
    dtu_class = #d.offline > 0 and "alert" or "good"
  end
  return concat {
    '<div class="cards">',
    card("Occupancy", pct(occ, spaces), fig("occupied", occ) .. " of " .. fig("spaces", spaces) .. " spaces"),
    card("Devices", fig("devices", spaces), fig("locks.total", L.total) .. " locks &middot; " ..
      fig("sensors.total", S.total) .. " sensors"),
    card("Locks", fig("locks.up", L.up) .. ' <span class="s">up</span>', fig("locks.down", L.down) .. " down"),
    card("Sensors frozen", fig("sensors.frozen", S.frozen), "of " .. S.total),
    card("Low battery", fig("low_battery", L.low_battery + S.low_battery), fig("locks.low_battery", L.low_battery) ..
      " locks, " .. fig("sensors.low_battery", S.low_battery) .. " sensors", L.low_battery + S.low_battery > 0 and "alert"),
    card("Faults", fig("faults", faults), "fault flags raised", faults > 0 and "alert" or "good"),
    card("DTUs offline", dtu_value, dtu_sub, dtu_class),
    "</div>",
  }
end

local function groups_panel(r)
  local out = { '<section class="panel" id="groups"><h2>Occupancy by group</h2>' }
  if not r.groups then
    out[#out + 1] = '<p class="note">No groups file: pass <code>--groups FILE</code> (the CSV or JSON file ' ..
      '<code>kinot serve</code> takes) to see occupancy by zone and level.</p>'
    local L, S = r.locks, r.sensors
    out[#out + 1] = svg.hbars { title = "Occupancy", x_label = "spaces", class = "hbars occupancy",
      parts = { { name = "occupied", class = "occupied" }, { name = "free", class = "free" } },
      rows = { { label = "all spaces", counts = { L.occupied + S.occupied, L.total + S.total - L.occupied - S.occupied },
                 note = pct(L.occupied + S.occupied, L.total + S.total) } }, width = 1100 }
  else
    local rows, trows = {}, {}
    for i, g in ipairs(r.groups.groups) do
      rows[i] = { label = g.group, counts = { g.occupied, g.free },
                  note = format("%d/%d  %s", g.occupied, g.total, pct(g.occupied, g.total)) }
      trows[i] = { group = g.group, occupied = g.occupied, free = g.free, total = g.total, share = pct(g.occupied, g.total) }
    end
    out[#out + 1] = '<div class="split">'
    out[#out + 1] = svg.hbars { title = "Occupancy by group", x_label = "spaces", class = "hbars occupancy",
      parts = { { name = "occupied", class = "occupied" }, { name = "free", class = "free" } }, rows = rows,
      empty = "the groups file names no group", width = 640 }
    out[#out + 1] = table_of(trows, { { "group", "Group" }, { "occupied", "Occupied", n = true },
      { "free", "Free", n = true }, { "total", "Total", n = true }, { "share", "Occupancy", n = true } })
    out[#out + 1] = "</div>"
    if r.groups.ungrouped > 0 then
      out[#out + 1] = format('<p class="note">%s devices in no group of the groups file.</p>',
        fig("groups.ungrouped", r.groups.ungrouped))
    end
  end
  out[#out + 1] = "</section>"
  return concat(out)
end

local function faults_panel(r)
  local L, S = r.locks, r.sensors
  local rows, trows = {}, report.fault_rows(r)
  for _, k in ipairs(vocabulary.faults.lock) do
    local l, s = L.faults[k] or 0, S.faults[k] or 0
    rows[#rows + 1] = { label = k, counts = { l, s }, note = format("%d", l + s) }
  end
  local out = { '<section class="panel" id="faults"><h2>Faults by kind</h2>',
    svg.hbars { title = "Faults by kind", x_label = "devices with the fault", class = "hbars faults",
                parts = { { name = "locks", class = "lock" }, { name = "sensors", class = "sensor" } }, rows = rows } }
  if #trows > 0 then
    out[#out + 1] = table_of(trows, { { "device", "Device" }, { "fault", "Fault" }, { "count", "Count", n = true } })
  else
    out[#out + 1] = '<p class="note ok">No faults.</p>'
  end
  out[#out + 1] = "</section>"
  return concat(out)
end

local function weakest_table(r)
  local rows = report.weakest_rows(r)
  if #rows == 0 then return '<p class="note">No signal readings.</p>' end
  return table_of(rows, { { "device", "Device" }, { "sn", "SN" }, { "rs_si", "rs_si (dBm)", n = true } })
end

local function dtus_panel(r)
  local d = r.dtus
  local out = { '<section class="panel" id="dtus"><h2>DTUs</h2>' }
  if d.total == 0 then
    out[#out + 1] = '<p class="note">None checked: pass <code>--dtu SN</code>, or set <code>KINOT_DTUS=sn,sn</code>.</p>'
  elseif #d.offline == 0 then
    out[#out + 1] = format('<p class="ok">All %s online.</p>', fig("dtus.total", d.total))
  else
    out[#out + 1] = format('<p class="bad">Offline: %d of %d.</p>', #d.offline, d.total)
    local rows = {}
    for i, o in ipairs(d.offline) do rows[i] = { sn = o.sn, host = o.host, updated_at = o.updated_at } end
    out[#out + 1] = table_of(rows, { { "sn", "SN" }, { "host", "Host" }, { "updated_at", "Last seen" } })
  end
  out[#out + 1] = "</section>"
  return concat(out)
end

--- render(r, meta) -> the page's text.  r: kinot.cli.report.build's table;
-- meta: generated_at (ISO 8601 UTC), endpoint (shown without credentials),
-- version
function M.render(r, meta)
  local endpoint = redact.url(tostring(meta.endpoint or ""))
  local title = "Kinot fleet report, " .. meta.generated_at
  return concat {
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<title>', escape(title), '</title><style>', CSS, '</style></head><body><main>',
    '<header><h1>Kinot fleet report</h1><div class="meta">Made <time datetime="', escape(meta.generated_at), '">',
    escape((meta.generated_at:gsub("T", " "):gsub("Z$", " UTC"))), '</time><br>from <code data-figure="endpoint">', escape(endpoint), '</code></div></header>',
    cards(r),
    groups_panel(r),
    '<div class="grid"><section class="panel" id="battery"><h2>Battery</h2>',
    histogram(r.battery, { title = "Devices by battery voltage", class = "histogram battery", decimals = 1,
                           x_label = "voltage (V); outer bars: below 3.0, 3.8 and above" }),
    format('<p class="note">%s readings; flagged low battery: %d locks, %d sensors.</p>',
      fig("battery.readings", r.battery.readings), r.locks.low_battery, r.sensors.low_battery),
    '</section><section class="panel" id="signal"><h2>Signal</h2>',
    histogram(r.signal, { title = "Devices by signal strength", class = "histogram signal", decimals = 0,
                          x_label = "rs_si (dBm); outer bars: below -120, 0 and above" }),
    format('<p class="note">%s readings.</p>', fig("signal.readings", r.signal.readings)),
    '</section></div>',
    '<div class="grid">', faults_panel(r),
    '<section class="panel" id="weakest"><h2>Weakest signal</h2>',
    weakest_table(r),
    '</section></div>',
    dtus_panel(r),
    '<footer>lua-kinot ', escape(meta.version or ""), ' &middot; <code>kinot report --html</code></footer>',
    '</main></body></html>\n',
  }
end

return M
