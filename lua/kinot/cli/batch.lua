-- `kinot command send --from FILE` and `kinot command wait --from FILE`
-- (docs/cli.md "Batches"): client:send_commands / client:wait_commands on
-- the command line, a progress bar on a terminal, a summary, the results
-- as a table, JSON lines or CSV.
local json = require "kinot.json"
local errors = require "kinot.errors"
local core = require "kinot.core_loader"

local misuse = errors.misuse

local M = {}

--- add(send, wait, number): the batch options of `command send` and
-- `command wait`; number(option) is the CLI's one number converter
function M.add(send, wait, number)
  send:option("--from", "Send to every device in FILE (- for stdin): a serial a line, or JSON lines {\"sn\": ..., \"value\": ...}")
  send:option("--concurrency", "Batch: commands at once (1..64; default 8)"):convert(number("--concurrency"))
  send:option("--rate", "Batch: commands a second at most"):convert(number("--rate"))
  send:option("--abort-after", "Batch: stop sending after N failures, or a ratio of them (0.1)"):convert(number("--abort-after"))
  send:option("--journal", "Batch: a journal file; run again with it to resume (nothing is sent twice)")
  send:flag("--csv", "Batch: the results as CSV")
  wait:option("--from", "Wait for every command in FILE (- for stdin): a guid a line, or the JSON lines of send --jsonl")
  wait:option("--concurrency", "Commands polled at once (1..64; default 8)"):convert(number("--concurrency"))
  wait:flag("--csv", "The results as CSV")
end

local BATCH_ONLY = { "concurrency", "rate", "abort_after", "journal", "csv" }

--- single(args): a batch option without --from is refused (it would be ignored)
function M.single(args)
  for _, k in ipairs(BATCH_ONLY) do
    if args[k] ~= nil and args[k] ~= false then
      misuse("--" .. k:gsub("_", "-") .. " applies to a batch: give --from FILE")
    end
  end
end

-- the lines of FILE (or stdin), without blank ones and # comments
local function lines_of(path)
  local f, e
  if path == "-" then f = io.stdin else f, e = io.open(path, "rb") end
  if not f then misuse("cannot read " .. path .. ": " .. tostring(e)) end
  local out, ln = {}, 0
  for line in f:lines() do
    ln = ln + 1
    line = line:gsub("\r$", ""):match("^%s*(.-)%s*$")
    if line ~= "" and line:sub(1, 1) ~= "#" then out[#out + 1] = { ln, line } end
  end
  if f ~= io.stdin then f:close() end
  return out
end

local function items_of(path, default_value)
  local items = {}
  for _, l in ipairs(lines_of(path)) do
    local ln, line = l[1], l[2]
    if line:sub(1, 1) == "{" then
      local doc = json.decode(line)
      if type(doc) ~= "table" or doc.sn == nil then misuse(path .. " line " .. ln .. ": a JSON line needs \"sn\"") end
      items[#items + 1] = { sn = doc.sn, value = doc.value == nil and default_value or doc.value }
    elseif line:match("^%d+$") then
      items[#items + 1] = line
    else
      misuse(path .. " line " .. ln .. ": expected a serial or a JSON object (got " .. line:sub(1, 40) .. ")")
    end
  end
  if #items == 0 then misuse(path .. " names no device") end
  return items
end

local function guids_of(path)
  local guids = {}
  for _, l in ipairs(lines_of(path)) do
    local ln, line = l[1], l[2]
    local guid = line
    if line:sub(1, 1) == "{" then
      local doc = json.decode(line)
      guid = type(doc) == "table" and doc.guid or nil
      if guid == json.null then guid = nil end
      if guid == nil then -- a line of send --jsonl for a command never created: nothing to wait for
        if type(doc) ~= "table" or doc.sn == nil then misuse(path .. " line " .. ln .. ": a JSON line needs \"guid\"") end
      end
    end
    if guid ~= nil then guids[#guids + 1] = guid end
  end
  if #guids == 0 then misuse(path .. " names no command") end
  return guids
end

-- ------------------------------------------------------------ output

-- the progress line on stderr, on a terminal only
local function progress_bar(out)
  if not out.tty_err then return nil end
  local last = 0
  local clock = os.clock
  return function(p, final)
    local t = clock()
    if not final and t - last < 0.1 then return end
    last = t
    local done = p.succeeded + p.failed + p.unknown + p.skipped + p.pending
    local cols = 30
    local filled = p.total > 0 and math.floor(cols * done / p.total) or cols
    out.err:write(string.format("\r\27[K[%s%s] %d/%d  sent %d  %s %d  %s %d  %s %d", string.rep("#", filled),
      string.rep(".", cols - filled), done, p.total, p.sent,
      out:paint("green", "succeeded"), p.succeeded, out:paint("red", "failed"), p.failed,
      out:paint("yellow", "unknown"), p.unknown))
    if final then out.err:write("\r\27[K") end
    out.bar_open = not final
    out.err:flush()
  end
end

local function flat(r)
  local e = r.error
  return {
    sn = r.sn, value = r.value, outcome = r.outcome, guid = r.guid, command_status = r.command_status,
    reason = r.reason, error_kind = e and e.kind, error = e and e.message,
    cause = e and e.cause, resumed = r.resumed,
  }
end

local CSV_COLUMNS = { "sn", "value", "outcome", "guid", "command_status", "reason", "error_kind", "error" }
local function csv_cell(v)
  if v == nil or v == json.null then return "" end
  if type(v) == "table" then v = json.encode(v) end
  v = tostring(v)
  -- a cell a spreadsheet would run as a formula
  if v:match("^[=+%-@\t\r]") and not v:match("^%-?%d") then v = "'" .. v end
  if v:find('[,"\r\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
  return v
end

local SUMMARY_ROWS = { { "total", "items" }, { "succeeded", "succeeded" }, { "pending", "sent, no final status" },
                       { "failed", "failed" }, { "unknown", "unknown outcome" }, { "skipped", "not sent" },
                       { "resumed", "from the journal" }, { "sent", "POSTs this run" }, { "throttled", "throttled answers" } }

-- one line of the table: the kind, and for an unknown outcome its cause
-- (the whole message is in --jsonl / --csv)
local function why(r)
  local e = r.error
  if not e then return r.reason end
  if e.kind == "unknown_outcome" then return "unknown_outcome (" .. tostring(e.cause) .. "): not sent again" end
  local m = e.message
  return e.kind .. ": " .. (#m > 90 and (m:sub(1, 87) .. "...") or m)
end

local function show(args, out, results, summary, sending)
  if args.json then
    local list = {}
    for i, r in ipairs(results) do list[i] = flat(r) end
    out:emit_json { results = list, summary = summary }
  elseif args.jsonl then
    for _, r in ipairs(results) do out:emit_json(flat(r)) end
  elseif args.csv then
    out.out:write(table.concat(CSV_COLUMNS, ","), "\n")
    for _, r in ipairs(results) do
      local f, cells = flat(r), {}
      for c, k in ipairs(CSV_COLUMNS) do cells[c] = csv_cell(f[k]) end
      out.out:write(table.concat(cells, ","), "\n")
    end
  end
  -- the summary for a person: on stdout, or on stderr beside machine output
  if args.json then return end
  local side = out
  if args.jsonl or args.csv then side = setmetatable({ out = out.err }, { __index = out }) end
  if not (args.jsonl or args.csv) then
    local bad = {}
    for _, r in ipairs(results) do
      if r.outcome ~= "succeeded" and r.outcome ~= "sent" or r.error then
        bad[#bad + 1] = { sn = r.sn, guid = r.guid, outcome = r.outcome,
                          why = why(r) }
      end
    end
    if #bad > 0 then
      local shown = {}
      for i = 1, math.min(#bad, 20) do shown[i] = bad[i] end
      side:table(shown, { { "sn", "SN" }, { "guid", "GUID" }, { "outcome", "OUTCOME" }, { "why", "WHY" } })
      if #bad > 20 then side:print(side:paint("dim", (#bad - 20) .. " more: see --jsonl or --csv")) end
      side:print("")
    end
  end
  local rows = {}
  for _, k in ipairs(SUMMARY_ROWS) do
    if (summary[k[1]] or 0) ~= 0 or k[1] == "total" or k[1] == "succeeded" or k[1] == "failed" or k[1] == "unknown" then
      if sending or (k[1] ~= "sent" and k[1] ~= "resumed" and k[1] ~= "skipped") then
        rows[#rows + 1] = { what = k[2], count = summary[k[1]] }
      end
    end
  end
  side:table(rows, { { "what", sending and "BATCH" or "WAIT" }, { "count", "COUNT" } })
  side:print(side:paint("dim", string.format("%.1f s", summary.elapsed) ..
    (summary.aborted and ("; stopped: " .. summary.aborted) or "")))
  if summary.unknown_sns then
    local sns = {}
    for i = 1, math.min(#summary.unknown_sns, 10) do sns[i] = tostring(summary.unknown_sns[i]) end
    side:print(side:paint("yellow", "unknown outcome (may or may not have been sent; not sent again; read these " ..
      "devices before sending to them): " .. table.concat(sns, " ") .. (#summary.unknown_sns > 10 and " ..." or "")))
  end
end

local function exit_code(results, summary, waited, EXIT)
  if summary.unknown > 0 then return EXIT.unknown_outcome end
  if summary.failed > 0 or summary.skipped > 0 then return EXIT.api end
  -- a wait that ended on a refusal (a guid the platform does not know), not
  -- on the clock: a failure, not a wait that ran out
  for _, r in ipairs(results) do
    if r.outcome == "sent" and r.error and r.error.kind ~= "timeout" then return EXIT.api end
  end
  if summary.pending > 0 and waited then return EXIT.wait_timeout end
  return EXIT.ok
end

--- run(args, out, client, EXIT) -> exit code: `command send --from` or `command wait --from`
function M.run(args, out, client, EXIT)
  local bar = progress_bar(out)
  local last
  local on_progress = bar and function(p) last = p; bar(p) end
  local results, summary
  if args.send then
    if args.sn then misuse("command send takes a SN or --from FILE, not both") end
    local items = items_of(args.from, args.value)
    -- a Ctrl-C while the list was read (stdin from a slow pipe): it stops
    -- here, before a journal is made or anything journaled
    if core.interrupted() then error(errors.new("interrupted", "interrupted"), 0) end
    results, summary = client:send_commands(items, {
      parameter = { key = args.key, value = args.value }, concurrency = args.concurrency, rate = args.rate,
      wait = args.wait, wait_timeout = args.wait_timeout, abort_after = args.abort_after,
      journal = args.journal, on_progress = on_progress,
    })
  else
    if args.guid then misuse("command wait takes a guid or --from FILE, not both") end
    results, summary = client:wait_commands(guids_of(args.from), {
      concurrency = args.concurrency, wait_timeout = args.wait_timeout, on_progress = on_progress })
  end
  if not results then error(summary, 0) end
  if bar and last then bar(last, true) end
  show(args, out, results, summary, args.send)
  return exit_code(results, summary, args.wait or not args.send, EXIT)
end

return M
