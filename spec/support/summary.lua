-- Sums busted's closing lines over the logs given and prints the one line
-- CI reads, last: "N passed, N failed".  Before it, each log that failed
-- shows what failed (its text after busted's closing line: the failure and
-- error sections; a log with no closing line, its end), and when the logs
-- lie in several directories (spec/support/suite.sh: one per runtime),
-- each directory's count.  Exits non-zero on any failure, or when a log has
-- no closing line (a crashed run counts as failed).
local passed, failed, bad = 0, 0, false
local dirs, order = {}, {}

for _, path in ipairs(arg) do
  local f = io.open(path, "rb")
  local text = f and f:read("*a") or ""
  if f then f:close() end
  local dir = path:match("^(.*)/[^/]*$") or "."
  if not dirs[dir] then
    dirs[dir] = { passed = 0, failed = 0 }
    order[#order + 1] = dir
  end
  local d = dirs[dir]
  local s, fl, e, after = text:match("(%d+) success%a* / (%d+) failures? / (%d+) errors?[^\n]*\n?(.*)$")
  if s then
    passed, d.passed = passed + tonumber(s), d.passed + tonumber(s)
    local n = tonumber(fl) + tonumber(e)
    failed, d.failed = failed + n, d.failed + n
    if n > 0 then io.write("\n==== ", path, ": ", n, " failed\n", after, "\n") end
  else
    local tail = {}
    for line in text:gmatch("[^\n]*") do
      tail[#tail + 1] = line
      if #tail > 40 then table.remove(tail, 1) end
    end
    io.write("\n==== ", path, ": no busted summary (crashed?); its end:\n", table.concat(tail, "\n"), "\n")
    failed, bad = failed + 1, true
    d.failed = d.failed + 1
  end
end
if #order > 1 then
  for _, dir in ipairs(order) do
    print(string.format("%s: %d passed, %d failed", dir, dirs[dir].passed, dirs[dir].failed))
  end
end
print(string.format("%d passed, %d failed", passed, failed))
os.exit((failed == 0 and not bad) and 0 or 1)
