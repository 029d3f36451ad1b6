#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, the load harness in --quick mode (checks the
# harness, asserts no timing), and the whole test suite (unit, integration against the fake
# tailnet over real sockets, doc tests). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# cmake and clang build BoringSSL; prometheus is the server the telemetry tests push to
# (remote write) and promtool checks fly/alerts.yml; shellcheck checks fly/start.sh; redis-server
# is the fleet's Redis in the fleet tests; chromium is the real browser that solves the
# proof-of-work challenge; apache2-utils's htpasswd writes the basic-auth tests' user files.
scripts/ensure-packages.sh cmake clang prometheus shellcheck redis-server chromium apache2-utils

# Two cores: keep builds from starving the tests' own servers.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# A one-off build of the whole workspace gains nothing from incremental state, which would add
# gigabytes on disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The production build (the Fly image) leaves the demo out: it must build, lint and pass its
# own unit tests without it.
cargo clippy -p proxy-app --no-default-features --all-targets --locked -- -D warnings
cargo test -p proxy-app --no-default-features --locked --bin proxy-app
# The fuzz targets' entry points (feature `fuzzing`) lint clean and replay their seed corpus,
# every past finding included; scripts/fuzz.sh runs them under libFuzzer.
cargo clippy -p proxy-core --features fuzzing --all-targets --locked -- -D warnings
cargo test -p proxy-core --features fuzzing --locked --test fuzz_corpus
# And each runs under libFuzzer for 10 s (a debug build): the targets keep building with
# cargo fuzz, and a shallow crash is caught here rather than in a long run.
scripts/fuzz.sh --brief
# The userspace tailnet transport (feature `tailscale-rs`, off by default) builds, lints and
# passes its tests: requests over tailscale-rs's in-memory network stacks in proxy-core, and
# the real tailscale-rs node started by proxy-app without a coordination server.
cargo clippy -p proxy-core --features tailscale-rs --all-targets --locked -- -D warnings
cargo clippy -p proxy-app --features tailscale-rs --all-targets --locked -- -D warnings
cargo test -p proxy-core --features tailscale-rs --locked --lib --test tailnet_userspace
cargo test -p proxy-app --features tailscale-rs --locked --test tailnet_userspace
cargo test -p proxy-app --features tailscale-rs --locked --test lifecycle check_
# The vendored crates' own unit tests (Pingora's and http's), where the copies keep what they need
# (pingora-core's and pingora-proxy's use dev-dependencies the copies leave out; pingora-runtime's
# one dev-dependency, tokio, is a dependency already).
cargo test -p pingora-http -p pingora-timeout -p pingora-runtime -p http --locked --lib
# proxy-core is a library for embedders: its docs must build without a broken or private link.
RUSTDOCFLAGS="-D warnings" cargo doc -p proxy-core -p plugins --no-deps --locked
benches/run.sh --quick > target/load-harness-quick.md
echo "load harness: every scenario ran (report in target/load-harness-quick.md)"
# The training run of the profile-guided build (scripts/pgo-build.sh, as the Fly image builds
# it), briefly: proxy-app alone answers each scenario as it should, with no peer installed.
benches/run.sh --quick --train > target/load-harness-train.md
echo "PGO training: every scenario answered (report in target/load-harness-train.md)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi
