-- busted's plainTerminal output, and besides it the wall time of each spec
-- file and of each test that took a second or more, written to the file
-- named by KINOT_SPEC_TIMES (`make test`: build/test/<runtime>.times), the
-- slowest first: where the suite spends its time.
--   busted -o spec/support/timed_output.lua ...
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.plainTerminal")(options)
  local path = os.getenv("KINOT_SPEC_TIMES")
  if not path or path == "" then return handler end

  local files, tests, started = {}, {}, {}
  busted.subscribe({ "file", "start" }, function(file)
    started[file] = busted.monotime()
    return nil, true
  end)
  busted.subscribe({ "file", "end" }, function(file)
    files[#files + 1] = { busted.monotime() - (started[file] or busted.monotime()), file.name }
    return nil, true
  end)
  busted.subscribe({ "test", "end" }, function(element)
    if (element.duration or 0) >= 1 then
      tests[#tests + 1] = { element.duration, element.trace.short_src .. ":" .. element.trace.currentline ..
        " " .. handler.getFullName(element) }
    end
    return nil, true
  end)
  busted.subscribe({ "exit" }, function()
    local f = io.open(path, "w")
    if not f then return nil, true end
    local by_time = function(a, b) return a[1] > b[1] end
    table.sort(files, by_time)
    table.sort(tests, by_time)
    f:write("# seconds per spec file (wall, setup and teardown included)\n")
    for _, e in ipairs(files) do f:write(string.format("%8.2f  %s\n", e[1], e[2])) end
    f:write("# tests of a second or more\n")
    for _, e in ipairs(tests) do f:write(string.format("%8.2f  %s\n", e[1], e[2])) end
    f:close()
    return nil, true
  end)
  return handler
end
