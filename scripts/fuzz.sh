#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (cargo fuzz) over their seed corpus in testdata/fuzz/,
# each for SECONDS (default 600), one after the other. Findings land in fuzz/artifacts/<target>/;
# a fixed one goes into testdata/fuzz/<target>/, where proxy-core's fuzz_corpus test replays
# it on every test run.
#
#   scripts/fuzz.sh                 # every target, 10 minutes each
#   scripts/fuzz.sh 60 path host    # these targets, a minute each
#   scripts/fuzz.sh --brief         # every target 10 s on a debug build (what CI runs)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-packages.sh cmake clang
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# Optimised builds fuzz faster; a debug build (with its overflow checks) builds faster,
# which is what a brief run wants.
profile=(-O)
if [ "${1:-}" = "--brief" ]; then
  profile=(--dev)
  set -- 10
fi
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config request_head path host deny_file)
# Stable Rust: no sanitizer (that needs nightly); libFuzzer's coverage guidance still works.
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  cp -n "testdata/fuzz/$target/"* "$corpus/"
  (cd fuzz && cargo fuzz run -s none "${profile[@]}" "$target" "../$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
done
