#!/usr/bin/env bash
# Reliability probes of proxy-app side by side with nginx: oversized and slowloris request
# heads, 10,000 idle keep-alive connections, keep-alive and partial-request timeouts,
# pipelining, an oversized response head, a reload, an origin restart, a graceful stop, a
# binary upgrade and a DNS outage under load, and 1,100 slow connections against an
# open-files limit of 1,024. Builds proxy-app and fake-tailnet in release mode, then runs
# probe.py, which prints a Markdown report and writes benches/reliability/RESULTS.md.
# Loopback only; the probes take about 2 minutes (under 15 in all with a warm build).
#
#   benches/reliability/run.sh            # build, probe, write RESULTS.md
#   benches/reliability/run.sh --keep     # keep the temporary directory (server logs)
#   benches/reliability/run.sh --quick    # few clients, short timeouts: checks the probes (no RESULTS.md)
#
# Needs nginx and python3 (installed if missing) and, for 10,000 connections per server,
# an open-files hard limit of at least 13,000.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-packages.sh nginx python3

target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
cargo build --release -p proxy-app -p fake-tailnet

# Enough file descriptors for the probe's clients and for both servers (they inherit it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The probe runs in a session of its own, so every process it starts (servers, nginx's
# workers, the fake tailnet, the origin) shares its process group and ends with it, also
# on Ctrl-C or when this script is killed.
probe_pid=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$probe_pid" ] && kill -0 "$probe_pid" 2>/dev/null; then
    kill -TERM "$probe_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$probe_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  [ -n "$probe_pid" ] && kill -KILL -- "-$probe_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

out=(--out benches/reliability/RESULTS.md)
for arg in "$@"; do
  if [ "$arg" = "--quick" ]; then out=(); fi  # a check of the probes, not results
done
setsid python3 benches/reliability/probe.py \
  --proxy-bin "$target_dir/release/proxy-app" \
  --tailnet-bin "$target_dir/release/fake-tailnet" \
  --command "benches/reliability/run.sh${*:+ $*}" "${out[@]}" "$@" &
probe_pid=$!
wait "$probe_pid"
