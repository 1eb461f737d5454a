#!/usr/bin/env bash
# make demo: a simulator with a seeded fleet, the fleet report, one command
# sent and awaited; the simulator is stopped however this script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
pidfile=$(mktemp /tmp/kinot-demo.XXXXXX)
stop() { lua5.4 bin/kinot sim stop --pid-file "$pidfile" >/dev/null 2>&1 || true; rm -f "$pidfile"; }
trap stop EXIT
trap 'exit 130' INT TERM

echo "== starting the simulator (nginx + Lua) with a seeded fleet"
info=$(lua5.4 bin/kinot --json sim --daemon --pid-file "$pidfile" --locks 1200 --sensors 800 --dtus 6 --seed 42 \
        --command-pace 0.3)
field() { lua5.4 -e "print(require('cjson').decode(io.read('a'))['$1'])" <<<"$info"; }
export KINOT_ENDPOINT=$(field endpoint) KINOT_APP_KEY=$(field app_key) KINOT_APP_SECRET=$(field app_secret)
export KINOT_DTUS=644200001,644200002,644200003,644200004,644200005,644200006
echo "   $KINOT_ENDPOINT"
echo

echo "== kinot report"
lua5.4 bin/kinot report --concurrency 8
echo

echo "== kinot command send 419600042 --value 1 --wait   (reset a lock's BlueTooth match code)"
lua5.4 bin/kinot command send 419600042 --value 1 --wait --wait-timeout 20
echo

echo "== examples/fleet_report.lua (the same from a Lua automation script)"
lua5.4 -e 'package.path="lua/?.lua;lua/?/init.lua;"..package.path; package.cpath="build/5.4/?.so;"..package.cpath' \
  examples/fleet_report.lua
echo
echo "More: README.md (CLI, Lua quick start, OpenResty receiver, benchmarks)."
