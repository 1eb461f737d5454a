-- A batch's journal (client:send_commands{journal = path}): one JSON
-- record a line, appended with write(2) (core.append_durable) before the
-- batch goes on.  A command's "sending" record is on the disk (fsync) before
-- its POST is handed to the transport (one fsync for the commands that
-- start together); its outcome is written when the answer is read (in the
-- file before the next command starts, on the disk with the next fsync).
-- A batch run again with the same journal reads it back: what each item
-- came to, so that nothing sent (or perhaps sent) is sent again.
--
-- Records:
--   {"journal":"kinot-batch","version":1,"fingerprint":HEX,"items":N}  first line
--   {"i":I,"sn":SN,"at":"sending"}        the POST is about to be written
--   {"i":I,"at":"not_sent"}               refused before the platform acted (429, ...): it may go again
--   {"i":I,"at":"created","guid":G,"status":S}
--   {"i":I,"at":"failed","kind":K,"message":M[,"status":N,"code":C]}   refused: no command
--   {"i":I,"at":"unknown","cause":K}      it may or may not have been created
--   {"i":I,"at":"final","guid":G,"status":S[,"reason":R]}             followed to its end (wait)
-- An item whose last record is "sending" was perhaps sent: the batch died
-- between writing the POST and reading its answer.  It is unknown.
local core = require "kinot.core_loader"
local json = require "kinot.json"
local errors = require "kinot.errors"
local read_file = require("kinot.file").read

local M = {}

local MAGIC = "kinot-batch"

--- fingerprint(plan, key) -> hex: what the batch is (its serials in order,
-- each one's parameter); the options (concurrency, rate ...) may change
-- between runs, the commands may not
function M.fingerprint(plan, key)
  local parts = { json.encode(key) }
  for i = 1, #plan do
    parts[#parts + 1] = string.format("%d=%s", plan[i].sn, json.encode(plan[i].value))
  end
  return core.digest("sha256", table.concat(parts, "\n"), nil, "hex")
end

local Journal = {}
Journal.__index = Journal

-- what may follow what in one item's history (across runs): a command is
-- journaled "sending" before it goes, and only an answer saying the
-- platform did not act on it ("not_sent") lets it go again.  A history
-- outside these (a record edited in, or of a kind this version does not
-- know) is refused: read another way, it could send a command twice.
local AFTER = {
  sending = { [false] = true, not_sent = true },
  not_sent = { sending = true }, created = { sending = true }, failed = { sending = true },
  unknown = { sending = true }, final = { created = true },
}

--- open(path, fingerprint, n[, plan]) -> journal | nil, err.  journal.found[i]:
-- the last record of item i from an earlier run (nil: none).  A journal of
-- another batch, or one whose records cannot be read as this batch's
-- (plan: its serials, checked against the "sending" records), raises
-- misuse (the caller gave the wrong file, changed the items or their
-- parameter, or the file was edited).
function M.open(path, fingerprint, n, plan)
  local found = {}
  -- one run of a batch at a time: two would both send what neither had
  -- journaled.  The lock is the journal's own (its inode's: a run through
  -- a symlink or a hard link meets it too), and a torn line is cut off in
  -- place, so that the locked file stays the journal
  local fd, lerr, busy = core.lock_file(path)
  if not fd then
    if busy then
      errors.misuse("journal " .. path .. " is in use by another run of this batch (two at once would send " ..
        "the same commands): wait for it to end")
    end
    return nil, errors.new("internal", "the batch journal could not be written: " .. tostring(lerr))
  end
  local ok, self, err = pcall(M.read, path, fingerprint, n, found, fd, plan)
  if not ok or not self then core.unlock_file(fd) end
  if not ok then error(self, 0) end
  return self, err
end

-- (open's second half, under the lock)
function M.read(path, fingerprint, n, found, fd, plan)
  local any = false
  local text, ferr = read_file(path)
  if not text then return nil, errors.new("internal", "the batch journal could not be read: " .. tostring(ferr)) end
  local lines = {}
  for line in text:gmatch("[^\n]*\n?") do
    if line ~= "" then lines[#lines + 1] = line end
  end
  for ln, line in ipairs(lines) do
    local complete = line:sub(-1) == "\n"
    local rec = complete and json.decode(line:sub(1, -2))
    if type(rec) ~= "table" then
      -- a last line cut short: the batch died inside its write, before the
      -- fsync returned, so before what it announced was done
      if ln == #lines and not complete and ln > 1 then
        -- cut it off, or the next record would join it into a line that
        -- reads as nothing
        local cut, msg = core.truncate_file(fd, #text - #line)
        if not cut then
          return nil, errors.new("internal", "the batch journal could not be repaired: " .. path .. ": " .. tostring(msg))
        end
        break
      end
      if ln == 1 then
        errors.misuse("journal " .. path .. " is not a kinot batch journal (one cut short in its first line " ..
          "never sent anything: remove it)")
      end
      errors.misuse("journal " .. path .. " line " .. ln .. " is not a batch journal record")
    end
    if ln == 1 then
      if rec.journal ~= MAGIC then errors.misuse("journal " .. path .. " is not a kinot batch journal") end
      if rec.version ~= 1 then
        errors.misuse("journal " .. path .. " is of version " .. tostring(rec.version) .. ", which this kinot " ..
          "does not read: resume it with the kinot that wrote it")
      end
      if rec.fingerprint ~= fingerprint or rec.items ~= n then
        errors.misuse("journal " .. path .. " belongs to another batch (" .. tostring(rec.items) ..
          " items, other serials or parameter than these " .. n .. "): give a new journal path for a new batch, " ..
          "or the same items and parameter to resume that one")
      end
      any = true
    else
      local i = rec.i
      if type(i) ~= "number" or i ~= math.floor(i) or i < 1 or i > n or type(rec.at) ~= "string" then
        errors.misuse("journal " .. path .. " line " .. ln .. " names no item of this batch")
      end
      i = math.tointeger and math.tointeger(i) or i
      local prev = found[i] and found[i].at or false
      local allowed = AFTER[rec.at]
      if not allowed or not allowed[prev] or
         (rec.at == "sending" and plan and rec.sn ~= nil and rec.sn ~= plan[i].sn) then
        errors.misuse("journal " .. path .. " line " .. ln .. ": a record this batch never writes there (" ..
          json.encode(rec.at) .. (prev and (" after " .. json.encode(prev)) or " first") .. " for item " .. i ..
          "): the journal was edited, or written by another kinot; nothing was sent")
      end
      found[i] = rec
    end
  end
  local self = setmetatable({ path = path, found = found, resumed = any, fd = fd }, Journal)
  if not any then
    local ok, err = self:write { { journal = MAGIC, version = 1, fingerprint = fingerprint, items = n } }
    if not ok then return nil, err end
  end
  return self
end

--- write(records[, sync]) -> true | nil, err: the records, one a line, in
-- the file (they outlive the process); on the disk too (fsync) unless sync
-- is false.  The batch syncs what must be there before a command goes (its
-- "sending" record); an outcome lost with the machine (never with the
-- process) leaves that record last: the item is then reported unknown,
-- never sent again.  The next sync takes the outcomes with it.
function Journal:write(records, sync)
  if #records == 0 then return true end
  local lines = {}
  for k = 1, #records do lines[k] = json.encode(records[k]) end
  local ok, msg = core.append_durable(self.path, table.concat(lines, "\n") .. "\n", sync ~= false)
  if not ok then return nil, errors.new("internal", "the batch journal could not be written: " .. tostring(msg)) end
  return true
end

--- close(): the lock dropped (another run may take the journal); idempotent
function Journal:close()
  if self.fd then core.unlock_file(self.fd) end
  self.fd = nil
end

--- sync() -> true | nil, err: all written so far on the disk (the batch's end)
function Journal:sync()
  local ok, msg = core.append_durable(self.path, "")
  if not ok then return nil, errors.new("internal", "the batch journal could not be written: " .. tostring(msg)) end
  return true
end

return M
