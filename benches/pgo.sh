#!/usr/bin/env bash
# Builds proxy-app with profile-guided optimisation (PGO) and load-tests it against the plain
# release build, side by side, with the load harness.
#
# scripts/pgo-build.sh builds it, as the Fly image does (trained by `load-harness --train`;
# see there), into <target>/pgo-bin/proxy-app. Then the harness runs that build as proxy-app
# and the plain release build as its baseline, with the arguments given here (default:
# `--scenarios pass-1k --duration 5 --rounds 6`), and prints the report; nothing in benches/
# is rewritten. `benches/run.sh --pgo` instead writes a full report of the PGO build.
#
# Two more release builds of proxy-app, each in a target directory of its own (about 20
# minutes on two cores the first time). Loopback only; bounded in time like benches/run.sh.
#
#   benches/pgo.sh
#   benches/pgo.sh --scenarios pass-1k,cache-hit-defaults-1k,pass-tls-1k --duration 5 --rounds 4
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh cmake clang nginx haproxy caddy wrk valgrind

target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
pgo_bin="$target_dir/pgo-bin/proxy-app"
scripts/pgo-build.sh "$pgo_bin"
cargo build --release -p proxy-app -p load-harness
harness="$target_dir/release/load-harness"

if [ "$#" -eq 0 ]; then
  set -- --scenarios pass-1k --duration 5 --rounds 6
fi
exec "$harness" --proxy-bin "$pgo_bin" --baseline-bin "$target_dir/release/proxy-app" \
  --command "benches/pgo.sh $*" "$@"
