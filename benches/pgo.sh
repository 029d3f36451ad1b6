#!/usr/bin/env bash
# Builds proxy-app with profile-guided optimisation (PGO) and load-tests it against the plain
# release build, side by side, with the load harness.
#
# 1. An instrumented proxy-app (`-Cprofile-generate`) answers every load-harness scenario
#    briefly (`load-harness --quick`, about two minutes; its report goes to
#    target/pgo/training.md). It writes its branch and call counts when it exits.
# 2. `llvm-profdata` (from Debian's llvm-N, N being the major version of rustc's own LLVM)
#    merges them into target/pgo/proxy-app.profdata.
# 3. proxy-app is built again with `-Cprofile-use`: target/pgo-use/<host>/release/proxy-app.
# 4. The harness runs that build as proxy-app and the plain release build as its baseline,
#    with the arguments given here (default: `--scenarios pass-1k --duration 5 --rounds 6`),
#    and prints the report; nothing in benches/ is rewritten.
#
# Two more release builds of proxy-app, each in a target directory of its own (about 20
# minutes on two cores the first time). Loopback only; bounded in time like benches/run.sh.
#
#   benches/pgo.sh
#   benches/pgo.sh --scenarios pass-1k,cache-hit-defaults-1k,pass-tls-1k --duration 5 --rounds 4
set -euo pipefail
cd "$(dirname "$0")/.."

host="$(rustc -vV | sed -n 's/^host: //p')"
llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
scripts/ensure-packages.sh cmake clang nginx haproxy caddy wrk valgrind "llvm-$llvm_major"
profdata_tool="llvm-profdata-$llvm_major"

target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
work="$target_dir/pgo"
rm -rf "$work"
mkdir -p "$work/raw"

cargo build --release -p proxy-app -p load-harness
harness="$target_dir/release/load-harness"

RUSTFLAGS="-Cprofile-generate=$work/raw" \
  cargo build --release -p proxy-app --target "$host" --target-dir "$target_dir/pgo-generate"
"$harness" --quick --proxy-bin "$target_dir/pgo-generate/$host/release/proxy-app" \
  --command "benches/pgo.sh (training)" > "$work/training.md"
"$profdata_tool" merge -o "$work/proxy-app.profdata" "$work/raw"/*.profraw
echo "profile: $work/proxy-app.profdata"

RUSTFLAGS="-Cprofile-use=$work/proxy-app.profdata" \
  cargo build --release -p proxy-app --target "$host" --target-dir "$target_dir/pgo-use"
pgo_bin="$target_dir/pgo-use/$host/release/proxy-app"
echo "PGO build: $pgo_bin"

if [ "$#" -eq 0 ]; then
  set -- --scenarios pass-1k --duration 5 --rounds 6
fi
exec "$harness" --proxy-bin "$pgo_bin" --baseline-bin "$target_dir/release/proxy-app" \
  --command "benches/pgo.sh $*" "$@"
