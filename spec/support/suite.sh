#!/usr/bin/env bash
# The whole suite (make test) or a part of it (make check): every spec file
# under Lua 5.4 and under LuaJIT, JOBS busted processes at a time, one spec
# file each, the longest first (the durations of the last run, in
# build/test/NAME.durations; when there are none, the files tagged #install,
# #fuzz or #slow, then the largest).
# The suite mostly waits on servers and timers, so the runs overlap; every
# server a spec starts listens on a port it picks, its files in a mktemp
# directory.  Each run writes its own log, build/test/NAME/<runtime>/<file>.log;
# a line per file as it ends, then each failed file's failures and each
# runtime's count (spec/support/summary.lua), and last the line CI reads:
# "N passed, N failed".  Exits non-zero on any failure or crashed run.
#
#   spec/support/suite.sh NAME JOBS [busted flags and spec files or dirs...]
#
# Run from the checkout's root.  The interpreters are the lua5.4 and luajit
# of PATH; the cores, build/5.4 and build/5.1 (SUITE_CPATH=dir: dir/5.4 ...).
set -uo pipefail
name=$1 jobs=$2
shift 2
out=build/test/$name
durations=build/test/$name.durations
cpath_root=${SUITE_CPATH:-build}

# spec files named among the arguments run instead of all of spec/; the
# other arguments go to every busted run
flags=() roots=()
for a in "$@"; do
  if [[ $a != -* && -e $a ]]; then roots+=("$a"); else flags+=("$a"); fi
done
[[ ${#roots[@]} -gt 0 ]] || roots=(spec)
# busted's own choice (.busted: ROOT spec, pattern _spec; Lua files)
mapfile -t files < <(find "${roots[@]}" -type f -name '*_spec*.lua' | sort -u)
if [[ ${#files[@]} -eq 0 ]]; then echo "suite.sh: no spec file in ${roots[*]}" >&2; exit 1; fi

# the longest first: the seconds each runtime and file took when last run
declare -A took=()
if [[ -r $durations ]]; then
  while read -r secs rt file; do took[$rt $file]=$secs; done < "$durations"
fi
queue=()
for rt in lua54 luajit; do
  for f in "${files[@]}"; do
    secs=${took[$rt $f]:-}
    # (none yet: the files that build or install first, then the largest)
    [[ -n $secs ]] || secs=$(( $(stat -c %s "$f") / 1000 + $(grep -qE '#(install|fuzz|slow)' "$f" && echo 1000 || echo 0) ))
    queue+=("$secs $rt $f")
  done
done

rm -rf "$out"
mkdir -p "$out/lua54" "$out/luajit"

run_one() { # runtime file: its busted run, its log, its line
  local rt=$1 file=$2 interp abi log t0 secs line
  if [[ $rt == lua54 ]]; then interp=lua5.4 abi=5.4; else interp=luajit abi=5.1; fi
  log=$SUITE_OUT/$rt/$(basename "$file" .lua).log
  t0=$EPOCHREALTIME
  KINOT_SPEC_TIMES=$log.times "$interp" /usr/bin/busted --cpath="$SUITE_CPATH_ROOT/$abi/?.so" \
    -o spec/support/timed_output.lua "${SUITE_FLAGS[@]+"${SUITE_FLAGS[@]}"}" "$file" >"$log" 2>&1 </dev/null
  secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  line=$(grep -Eo '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$log" | tail -n 1)
  printf '%s %s %s\n' "$secs" "$rt" "$file" >>"$SUITE_OUT/durations"
  printf '%-7s %-36s %6s s  %s\n' "$rt" "$file" "$secs" "${line:-NO SUMMARY (crashed?)}"
}
export -f run_one
export SUITE_OUT=$out SUITE_CPATH_ROOT=$cpath_root
# (an array cannot be exported: each job gets the flags quoted in a string)
export SUITE_FLAGS_Q=""
[[ ${#flags[@]} -eq 0 ]] || SUITE_FLAGS_Q=$(printf '%q ' "${flags[@]}")

# when the suite began, in the kernel's ticks since boot (a process's
# start time in /proc/PID/stat, field 22): the servers left running are
# looked for among those started since (see left_running below)
suite_began=$(awk '{ print $22 }' /proc/$$/stat)

printf '%s\n' "${queue[@]}" | sort -k1,1 -rn | while read -r _ rt f; do printf '%s\0%s\0' "$rt" "$f"; done |
  xargs -0 -n 2 -P "$jobs" bash -c 'eval "SUITE_FLAGS=($SUITE_FLAGS_Q)"; run_one "$1" "$2"' _

# durations for the next run's order; each runtime's tests of a second or more
# (this run's, then those of files it left out)
{ cat "$out/durations"; [[ ! -r $durations ]] || cat "$durations"; } | awk '!seen[$2 " " $3]++' |
  sort -k2,2 -k3,3 >"$durations.new" && mv "$durations.new" "$durations"
for rt in lua54 luajit; do
  cat "$out/$rt"/*.times 2>/dev/null | sed -n '/^# tests/,/^# seconds/p' | grep -v '^#' | sort -rn >"$out/$rt.slow-tests"
done
# Servers left running: a spec stops what it started, even when it fails
# (a busted it keeps only its last finally: a second one replaced the first
# and its redis-server outlived every run).  A redis-server, redis-sentinel
# or nginx started since the suite began and still there 10 s after the
# last spec ended fails the run, named with its directory.  (The daemons
# rewrite their environment for their process title, so no mark passed
# down survives: on a machine where others start such servers meanwhile,
# theirs would be named too.  Nothing is killed here for that reason.)
left_running() {
  local p pid stat name state began
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    stat=$(cat "$p/stat" 2>/dev/null) || continue
    name=${stat#*(} name=${name%%)*}
    [[ $name == redis-server || $name == redis-sentinel || $name == nginx ]] || continue
    read -r state began < <(awk '{ sub(/^.*\) /, ""); print $1, $20 }' <<<"$stat")
    [[ $state == Z || -z $began || $began -lt $suite_began ]] && continue
    printf '%s (in %s) %s\n' "$pid" "$(readlink "$p/cwd" 2>/dev/null)" "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)"
  done
}
leaked=""
for _ in $(seq 20); do
  leaked=$(left_running)
  [[ -n $leaked ]] || break
  sleep 0.5
done
leak_logs=()
if [[ -n $leaked ]]; then
  mkdir -p "$out/left-running"
  n=$(printf '%s\n' "$leaked" | wc -l)
  { printf '0 successes / %d failures / 0 errors\n' "$n"
    printf 'left running after every spec had ended (a spec that starts a server stops it, even when it fails):\n%s\n' "$leaked"
  } >"$out/left-running/servers.log"
  leak_logs=("$out/left-running/servers.log")
fi
lua5.4 spec/support/summary.lua "$out"/lua54/*.log "$out"/luajit/*.log "${leak_logs[@]+"${leak_logs[@]}"}"
