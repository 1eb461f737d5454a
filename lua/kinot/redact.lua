-- The one place where text about URLs loses its secrets: the userinfo of
-- every URL ("scheme://user:password@host") becomes "<redacted>" before it
-- reaches a message, an event, a log line or the CLI.  The C core has the
-- same rule for the messages it builds (kn_redact_userinfo in src/http.c).
local M = {}

local gsub, find, sub = string.gsub, string.find, string.sub

M.MARK = "<redacted>"

-- the userinfo of one URL (up to its LAST '@': a careless '@' or '/' in a
-- password stays inside it; redacting too much is harmless)
local function userinfo(url)
  local a = find(url, "://", 1, true)
  a = a and a + 3 or 1
  local at
  local i = a
  while true do
    local j = find(url, "@", i, true)
    if not j then break end
    at, i = j, j + 1
  end
  if not at or at <= a then return nil end
  return sub(url, a, at - 1)
end

local function plain(s) return (gsub(s, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

--- text(s, ...) -> s with every "scheme://userinfo@" redacted, and the
-- userinfo of each URL given after it (a proxy may have no scheme) wherever
-- it appears.  Anything that is not a string comes back as it was.
function M.text(s, ...)
  if type(s) ~= "string" then return s end
  for i = 1, select("#", ...) do
    local u = select(i, ...)
    local info = type(u) == "string" and userinfo(u)
    -- with its '@', so that a short one ("a") does not take every "a"
    if info and #info > 0 then s = gsub(s, plain(info .. "@"), M.MARK .. "@") end
  end
  -- scheme://anything-but-space-and-quotes@ : the last '@' before the end of the URL
  s = gsub(s, "(%a[%w+.-]*://)([^%s'\"`]*)", function(scheme, rest)
    local info = userinfo(rest)
    if not info or info == M.MARK then return nil end
    return scheme .. M.MARK .. sub(rest, #info + 1)
  end)
  return s
end

--- url(u) -> the URL without its credentials
function M.url(u)
  return M.text(u, u) -- its own userinfo too: one with a quote or a space ends no generic match
end

return M
