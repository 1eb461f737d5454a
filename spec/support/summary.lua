-- Sums busted's closing lines over the runtimes' logs and prints the one
-- line CI reads: "N passed, N failed".  Exits non-zero on any failure, or
-- when a log has no closing line (a crashed run counts as failed).
local passed, failed, bad = 0, 0, false
for _, path in ipairs(arg) do
  local f = io.open(path, "rb")
  local text = f and f:read("*a") or ""
  if f then f:close() end
  local s, fl, e = text:match("(%d+) successes? / (%d+) failures? / (%d+) errors?")
  if s then
    passed = passed + tonumber(s)
    failed = failed + tonumber(fl) + tonumber(e)
  else
    io.stderr:write(path, ": no busted summary found (the run crashed?)\n")
    failed, bad = failed + 1, true
  end
end
print(string.format("%d passed, %d failed", passed, failed))
os.exit((failed == 0 and not bad) and 0 or 1)
