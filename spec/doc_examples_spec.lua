-- Every ```sh and ```lua example of README.md and docs/*.md runs, verbatim,
-- against `kinot sim` started as a user starts it (`kinot sim --daemon`),
-- with KINOT_ENDPOINT, KINOT_APP_KEY and KINOT_APP_SECRET pointed at it and
-- `kinot` on PATH (this checkout's bin/kinot under the runtime of the run).
--   * a ```sh block: each line a command of its own, which must exit 0;
--   * a file's ```lua blocks: one program, in order (a later block uses the
--     `kinot` or `client` of an earlier one, as the reader does), which must
--     run to its end;
--   * before each block the simulator is reset (POST /__kinot_sim/reset): a
--     fault one block injects does not reach the next.
-- What cannot run here is skipped by SKIP below, each entry with its reason;
-- an entry that no longer matches anything fails the spec, so the list
-- stays as small as the docs allow.  The simulator gets --command-pace 0.05:
-- `--wait` on a command takes a second, not ten.
local H = require "helpers"
local launcher = require "kinot.sim.launcher"
local json = require "cjson"

local RUNTIME = rawget(_G, "jit") and "luajit" or "lua5.4"
local ABI = rawget(_G, "jit") and "5.1" or "5.4"

-- { file, Lua pattern a sh line or a lua block's first line matches, why }
local SKIP = {
  { "README.md", "^make ", "builds, runs the suite or installs: spec/install_spec.lua runs `make install`" },
  { "README.md", "^export KINOT_APP_KEY=%.%.%.", "placeholder credentials: this spec exports the simulator's" },
  { "README.md", "^kinot sim %-%-locks 500", "a simulator in the foreground until Ctrl-C: this spec runs one with --daemon" },
  { "docs/simulator.md", "^kinot sim %-%-locks 500", "a simulator in the foreground until Ctrl-C" },
  { "docs/simulator.md", "^kinot sim %-%-daemon && kinot sim stop",
    "the default pid file (/tmp/kinot-sim.pid), which another simulator on this machine may hold" },
  { "README.md", "^kinot verify ", "body.json: a callback body the platform sent (spec/cli_spec.lua verifies some)" },
  { "docs/callback-sign.md", "^kinot verify ", "body.json: a callback body the platform sent" },
  { "README.md", "^kinot report %-%-from ", "a kinot serve on 127.0.0.1:8080 (spec/report_html_spec.lua reads one with --from)" },
  { "README.md", "^kinot worker ", "redis-server and the reader's handler module (spec/redis_spec.lua runs the worker)" },
  { "docs/redis.md", "^KINOT_REDIS_URL=", "a redis-server at 10.0.0.7 and the reader's handler module" },
  { "README.md", "^local callback = require \"kinot.callback\"\nlocal ev, err = callback.verify%(raw_body",
    "raw_body: a callback body the platform sent" },
  { "docs/callback-sign.md", "^sign_rule = {", "notation, not Lua: `|` between the choices" },
  { "docs/callback-sign.md", "^local report = assert%(callback.discover%(raw,", "raw: a callback body the platform sent" },
  { "docs/callbacks.md", "^local rcv = callback.receiver", "secret, fn and raw: the reader's own" },
  { "docs/paging.md", "^for lock in client:each_locker .* do %.%.%. end", "`...` stands for the loop's body" },
}

-- README.md and every docs/*.md (a page without examples runs nothing)
local FILES = { "README.md" }
do
  local p = io.popen("cd '" .. H.root .. "' && ls docs/*.md")
  for f in p:lines() do FILES[#FILES + 1] = f end
  p:close()
end

local read = H.read

local function sh(cmd) -- -> true when it exited 0, its output
  local out, rc = H.sh(cmd)
  return rc == 0, out
end

--- blocks(md) -> { {lang = "sh"|"lua", text = ..., line = n} ... } in order
local function blocks(md)
  local out, lineno, cur = {}, 0, nil
  for line in (md .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    if cur then
      if line:match("^```") then
        out[#out + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    else
      local lang = line:match("^```(%a+)%s*$")
      if lang then
        cur = { lang = lang, line = lineno, lines = {} }
      end
    end
  end
  for _, b in ipairs(out) do b.text = table.concat(b.lines, "\n") end
  return out
end

local used = {}
local function skipped(file, text)
  for i, s in ipairs(SKIP) do
    if s[1] == file and text:find(s[2]) then
      used[i] = true
      return s[3]
    end
  end
end

describe("the README's and docs' examples against kinot sim #sim #cli #slow", function()
  local tmp, sim, env
  local serve_port = launcher.free_port()

  setup(function()
    local p = io.popen("mktemp -d /tmp/kinot-docs.XXXXXX")
    tmp = p:read("*l")
    p:close()
    assert(sh("mkdir -p " .. tmp .. "/bin && printf '#!/bin/sh\\nexec %s %s/bin/kinot \"$@\"\\n' " .. RUNTIME .. " " ..
      H.root .. " > " .. tmp .. "/bin/kinot && chmod +x " .. tmp .. "/bin/kinot"))
    local ok, out = sh("cd " .. tmp .. " && " .. RUNTIME .. " " .. H.root .. "/bin/kinot --json sim --daemon " ..
      "--command-pace 0.05 --port " .. launcher.free_port() .. " --pid-file " .. tmp .. "/sim.pid")
    assert(ok, out)
    sim = json.decode(out)
    env = "export PATH=" .. tmp .. "/bin:$PATH KINOT_ENDPOINT=" .. sim.endpoint .. " KINOT_APP_KEY=" .. sim.app_key ..
      " KINOT_APP_SECRET=" .. sim.app_secret ..
      " LUA_PATH='" .. H.root .. "/lua/?.lua;" .. H.root .. "/lua/?/init.lua;;'" ..
      " LUA_CPATH='" .. H.root .. "/build/5.1/?.so;;' LUA_CPATH_5_4='" .. H.root .. "/build/5.4/?.so;;'" ..
      " KINOT_STAGE= KINOT_PROXY= HOME=" .. tmp .. -- a docs line may write under ~
      -- a documented `kinot serve` listens here, not on 8080, which something else may hold
      " KINOT_SERVE_LISTEN=127.0.0.1:" .. serve_port .. " KINOT_SERVE_URL=http://127.0.0.1:" .. serve_port ..
      "; cd " .. tmp .. "; "
  end)
  teardown(function()
    if tmp then
      os.execute(RUNTIME .. " " .. H.root .. "/bin/kinot sim stop --pid-file " .. tmp .. "/sim.pid >/dev/null 2>&1")
      os.execute("rm -rf " .. tmp)
    end
  end)

  local function reset()
    local res = H.raw("POST", sim.endpoint:gsub("/open/lora/v1$", "") .. "/__kinot_sim/reset", "{}")
    assert.are.equal(200, res.status)
  end

  -- the page's directory, and the defaults of `kinot sim --daemon` and `kinot serve --daemon` in it
  local function in_page(file)
    return "mkdir -p '" .. file .. "' && cd '" .. file .. "' && export KINOT_SIM_PID_FILE=\"$PWD/sim.pid\"" ..
      " KINOT_SERVE_PID_FILE=\"$PWD/serve.pid\" && "
  end

  for _, file in ipairs(FILES) do
    it(file .. ": every ```sh line and its ```lua blocks", function()
      -- what the page started in the background stops with it, even when it fails
      finally(function()
        sh(env .. in_page(file) .. "kinot serve stop; kinot sim stop")
      end)
      local md = assert(read(H.root .. "/" .. file), file)
      local program = {}
      for _, b in ipairs(blocks(md)) do
        if b.lang == "sh" then
          reset()
          for k, line in ipairs(b.lines) do
            if line:match("%S") and not skipped(file, line) then
              -- each page in a directory of its own: one page's files (a batch's journal, the pid
              -- files of the simulator and the server it starts in the background) are not another's
              local ok, out = sh(env .. in_page(file) .. line)
              assert(ok, file .. ":" .. (b.line + k) .. ": " .. line .. "\n" .. out)
            end
          end
        elseif b.lang == "lua" and not skipped(file, b.text) then
          program[#program + 1] = "-- " .. file .. ":" .. b.line .. "\n" .. b.text
        end
      end
      if #program > 0 then
        reset()
        local path = tmp .. "/" .. file:gsub("/", "_") .. ".lua"
        local f = assert(io.open(path, "wb"))
        f:write(table.concat(program, "\n"), "\nio.write('ran to the end')\n")
        f:close()
        local ok, out = sh(env .. in_page(file) .. RUNTIME .. " " .. path)
        assert(ok and out:find("ran to the end", 1, true), file .. "'s lua blocks (" .. path .. "):\n" .. out)
      end
    end)
  end

  it("every SKIP entry still matches an example (the list stays small)", function()
    for i, s in ipairs(SKIP) do
      assert.is_true(used[i] == true, "SKIP " .. s[1] .. " " .. s[2] .. " matches nothing")
    end
  end)

  it("runs the examples under " .. RUNTIME .. " with the " .. ABI .. " core", function()
    local ok, out = sh(env .. "kinot --version")
    assert(ok, out)
    assert.matches(RUNTIME == "luajit" and "LuaJIT" or "Lua 5%.4", out)
  end)
end)
