#!/usr/bin/env bash
# Load-tests proxy-app against a local fake tailnet, side by side with nginx (and HAProxy
# and Caddy in the pass-through scenarios), and writes benches/RESULTS.md and the chart
# benches/RESULTS.svg. Installs nginx, haproxy, caddy, wrk, h2load (nghttp2-client) and valgrind
# if missing (the *-paced scenarios send a set rate with h2load; pass-1k,
# cache-hit-defaults-1k, banned and observed-1k count instructions per request under callgrind).
# Loopback only, except the wan-* scenarios; bounded in time.
#
# wan-* scenarios (latency-bound, upstream connection reuse matters): the harness puts the
# fake peer in a network namespace edgebench-<pid>, joined by a veth pair with a /30 from
# 10.213.0.0/16 and `tc netem` delay, half the round trip on each end (--netem-delay,
# default 20ms). Without sch_netem in the kernel the peer adds the delay in user space
# instead; without root or iproute2 these scenarios are skipped. The namespace is removed
# on exit, error and Ctrl-C, and a killed run's at the next start.
#
#   benches/run.sh                 # full run (release build), about 25 minutes
#   benches/run.sh --pgo           # the same, of the PGO build the Fly image ships
#                                  # (scripts/pgo-build.sh; about 20 minutes more)
#   benches/run.sh --quick         # every scenario briefly, checks the harness (debug build)
#   benches/run.sh --scenarios pass-1k,conns-256 --duration 5
#   benches/run.sh --scenarios wan-pass-1k,wan-pass-tls-1k --netem-delay 50ms
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-packages.sh cmake clang nginx haproxy caddy wrk nghttp2-client valgrind

profile=release
out=(--out benches/RESULTS.md)
pgo=false
command="benches/run.sh $*"
harness_args=()
for arg in "$@"; do
  case "$arg" in
    --quick) profile=dev; out=(); harness_args+=("$arg") ;;
    --pgo) pgo=true ;;
    *) harness_args+=("$arg") ;;
  esac
done
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin_dir="$target_dir/$([ "$profile" = dev ] && echo debug || echo release)"
cargo build --profile "$profile" -p proxy-app -p load-harness
proxy_bin="$bin_dir/proxy-app"
if [ "$pgo" = true ]; then
  proxy_bin="$target_dir/pgo-bin/proxy-app"
  scripts/pgo-build.sh "$proxy_bin"
fi
exec "$bin_dir/load-harness" --proxy-bin "$proxy_bin" --command "$command" "${out[@]}" "${harness_args[@]}"
