-- Text from the platform, or from a user's file, made safe to put in HTML
-- and in inline SVG, in text and in an attribute's quotes alike: controls and
-- invalid UTF-8 shown as the CLI shows them (\xNN, kinot.cli.output.escape),
-- then & < > " ' as character references.  A hostile name renders as text.
local output = require "kinot.cli.output"

local ENTITY = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

return function(s)
  return (output.escape(tostring(s)):gsub("[&<>\"']", ENTITY))
end
