-- The version of lua-kinot, written here only: kinot._VERSION, the
-- User-Agent, `kinot --version`, the versioned rockspec (`make rockspec`)
-- and `make install` read it.  spec/version_spec.lua checks that the
-- rockspecs and CHANGELOG.md agree.
return "0.2.0"
