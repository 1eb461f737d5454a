-- The project stands on its own: no tracked file cites a document that is
-- not in the repository.  Every relative Markdown link of README.md and
-- docs/*.md reaches a tracked file (and, for a link into a Markdown file
-- with a #fragment, one of its headings); every docs/ page that code, specs
-- or the Makefile names exists; docs/README.md indexes every docs/ page; and
-- no tracked file points at the contract or the API reference that the
-- project was built from outside the repository.

-- the repository's root: where busted runs (as the other specs assume)
local ROOT = (function()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end)()

local function sh_lines(cmd)
  local p = io.popen("cd '" .. ROOT .. "' && " .. cmd .. " 2>/dev/null; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  local lines = {}
  for line in out:gsub("rc=%d+%s*$", ""):gmatch("[^\n]+") do lines[#lines + 1] = line end
  return rc, lines
end

-- the tracked files: git's list in a checkout, every file of the tree otherwise
-- (an unpacked release has no .git)
local function tracked_files()
  local rc, files = sh_lines("git ls-files")
  if rc ~= 0 or #files == 0 then
    rc, files = sh_lines("find . -type f ! -path './.git/*' ! -path './build/*' | sed 's|^\\./||'")
    assert(rc == 0 and #files > 0, "cannot list the project's files")
  end
  local set = {}
  for _, f in ipairs(files) do set[f] = true end
  return files, set
end

local function read(path)
  local f = assert(io.open(ROOT .. "/" .. path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- "a/b/../c/./d" -> "a/c/d"; nil when it climbs out of the repository
local function normalize(path)
  local parts = {}
  for seg in path:gmatch("[^/]+") do
    if seg == ".." then
      if #parts == 0 then return nil end
      parts[#parts] = nil
    elseif seg ~= "." then
      parts[#parts + 1] = seg
    end
  end
  return table.concat(parts, "/")
end

local function dir_of(path)
  return path:match("^(.*)/[^/]*$") or ""
end

-- Markdown without its code: fenced blocks and inline code spans hold
-- examples, not links
local function prose(md)
  local out, fenced = {}, false
  for line in (md .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") or line:match("^%s*~~~") then
      fenced = not fenced
    elseif not fenced then
      out[#out + 1] = (line:gsub("``.-``", ""):gsub("`[^`]*`", ""))
    end
  end
  return table.concat(out, "\n")
end

-- the anchors GitHub gives a Markdown file's headings
local function anchors(md)
  local set, seen = {}, {}
  local fenced = false
  for line in (md .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") or line:match("^%s*~~~") then
      fenced = not fenced
    elseif not fenced then
      local title = line:match("^#+%s+(.-)%s*#*%s*$")
      if title then
        local slug = title:lower():gsub("`", ""):gsub("%[(.-)%]%(.-%)", "%1")
        slug = slug:gsub("[^%w%- _\128-\255]", ""):gsub(" ", "-")
        local n = seen[slug]
        seen[slug] = (n or 0) + 1
        set[n and (slug .. "-" .. n) or slug] = true
      end
    end
  end
  return set
end

-- every inline link and image target of a Markdown text: [text](target "title")
local function links(md)
  local out = {}
  for target in prose(md):gmatch("%]%(%s*<?([^%s)>]+)>?[^)]*%)") do out[#out + 1] = target end
  -- reference-style definitions: [name]: target
  for target in prose(md):gmatch("\n%s*%[[^%]]+%]:%s*<?([^%s>]+)") do out[#out + 1] = target end
  return out
end

local files, tracked = tracked_files()

-- a tracked file, or a directory holding one
local function exists(path)
  if tracked[path] then return true end
  local prefix = path:gsub("/$", "") .. "/"
  for _, f in ipairs(files) do
    if f:sub(1, #prefix) == prefix then return true end
  end
  return false
end

local markdown = {}
for _, f in ipairs(files) do
  if f == "README.md" or f:match("^docs/.+%.md$") then markdown[#markdown + 1] = f end
end

-- text files only: a NUL byte marks a binary one
local texts = {}
for _, f in ipairs(files) do
  local s = read(f)
  if not s:find("\0", 1, true) then texts[f] = s end
end

describe("the project's own documents #unit", function()
  it("has docs/README.md, an index that README.md links", function()
    assert.is_true(tracked["docs/README.md"], "docs/README.md is not tracked")
    local found = false
    for _, target in ipairs(links(read("README.md"))) do
      if normalize(target:gsub("#.*$", "")) == "docs/README.md" then found = true end
    end
    assert.is_true(found, "README.md does not link docs/README.md")
  end)

  it("indexes every docs/ page in docs/README.md", function()
    local linked = {}
    for _, target in ipairs(links(read("docs/README.md"))) do
      local path = normalize("docs/" .. target:gsub("#.*$", ""))
      if path then linked[path] = true end
    end
    local missing = {}
    for _, f in ipairs(markdown) do
      if f:match("^docs/") and f ~= "docs/README.md" and not linked[f] then missing[#missing + 1] = f end
    end
    assert.are.same({}, missing, "docs/README.md does not link these pages")
  end)

  it("resolves every relative link of README.md and docs/*.md to a tracked file", function()
    assert.is_true(#markdown >= 2, "no Markdown files found")
    local broken, checked = {}, 0
    for _, md in ipairs(markdown) do
      for _, target in ipairs(links(read(md))) do
        if not target:match("^%a[%w+.-]*:") then -- http:, https:, mailto: ... are not ours to check
          checked = checked + 1
          local file, fragment = target:match("^([^#?]*)[^#]*#?(.*)$")
          local path = file == "" and md or normalize((dir_of(md) ~= "" and dir_of(md) .. "/" or "") .. file)
          if not path or not exists(path) then
            broken[#broken + 1] = md .. ": " .. target
          elseif fragment ~= "" and path:match("%.md$") and tracked[path] and not anchors(read(path))[fragment] then
            broken[#broken + 1] = md .. ": " .. target .. " (no such heading in " .. path .. ")"
          end
        end
      end
    end
    assert.is_true(checked > 0, "no relative link found: the link reader is broken")
    assert.are.same({}, broken, "links to nothing in the repository")
  end)

  it("names only docs/ pages that exist, in every tracked file", function()
    local missing, named = {}, 0
    for f, s in pairs(texts) do
      for at, path in s:gmatch("()(docs/[%w_%-/%.]-%.md)") do
        -- the repository's docs/, not a longer path or URL ending in one
        local before = at > 1 and s:sub(at - 1, at - 1) or ""
        if before:match("[%w_%-/%.:]") then path = nil end
        if path then
          named = named + 1
          if not tracked[path] then missing[#missing + 1] = f .. ": " .. path end
        end
      end
    end
    assert.is_true(named > 0, "no docs/ page named anywhere: the reader is broken")
    table.sort(missing)
    assert.are.same({}, missing, "these files name docs/ pages that are not in the repository")
  end)

  it("cites no document from outside the repository", function()
    -- spelt in pieces, so that this file does not cite them itself
    local SECTION = "\194\167" -- the section sign, UTF-8
    local banned = {
      "DESIGN " .. SECTION, "DESIGN" .. SECTION, "DESIGN" .. ".md", "DESIGN " .. "section",
      "../" .. "shared", "/work/" .. "shared", "shared/" .. "vectors",
      "kinot-api-" .. "reference.md",
    }
    local found = {}
    for f, s in pairs(texts) do
      for _, b in ipairs(banned) do
        local at = s:find(b, 1, true)
        if at then
          local line = select(2, s:sub(1, at):gsub("\n", "")) + 1
          found[#found + 1] = f .. ":" .. line .. ": " .. b
        end
      end
    end
    table.sort(found)
    assert.are.same({}, found, "cites a document that is not in the repository")
  end)

  it("reads links, headings and code as GitHub does (the reader itself)", function()
    local md = "# Errors and `exit` codes\n## Errors\n```\n[x](nowhere.md)\n```\nsee `[y](nor-here.md)` and [z](a/../b.md#errors-1) [w]: c.md"
    assert.are.same({ "a/../b.md#errors-1" }, links(md))
    local a = anchors(md)
    assert.is_true(a["errors-and-exit-codes"])
    assert.is_true(a["errors"])
    assert.is_nil(a["errors-1"])
    assert.are.equal("b.md", normalize("a/../b.md"))
    assert.is_nil(normalize("../b.md"))
  end)
end)
