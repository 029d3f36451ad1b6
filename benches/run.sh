#!/usr/bin/env bash
# Load-tests proxy-app against a local fake tailnet, side by side with nginx, and writes
# benches/RESULTS.md. Installs nginx and wrk if missing. Loopback only; bounded in time.
#
#   benches/run.sh                 # full run (release build), about 10 minutes
#   benches/run.sh --quick         # every scenario briefly, checks the harness (debug build)
#   benches/run.sh --scenarios pass-1k,conns-256 --duration 5
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-packages.sh cmake clang nginx wrk

profile=release
out=(--out benches/RESULTS.md)
for arg in "$@"; do
  if [ "$arg" = "--quick" ]; then profile=dev; out=(); fi
done
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin_dir="$target_dir/$([ "$profile" = dev ] && echo debug || echo release)"
cargo build --profile "$profile" -p proxy-app -p load-harness
exec "$bin_dir/load-harness" --proxy-bin "$bin_dir/proxy-app" --command "benches/run.sh $*" "${out[@]}" "$@"
