-- luacheck: every file local-only; nginx's `ngx` where OpenResty code runs
std = "max"
max_line_length = 160
files["spec"] = { std = "+busted" }
files["lua/kinot/transport"] = { globals = { "ngx" } }
files["lua/kinot/callback"] = { globals = { "ngx" } }
files["lua/kinot/sim"] = { globals = { "ngx" } }
files["examples/openresty"] = { globals = { "ngx" } }
