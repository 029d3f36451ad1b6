#!/usr/bin/env bash
# Rate-limit benchmarks: the cost of one decision, and proxy RSS before and after one
# million distinct client IPs (target: growth under 16 MiB). Release build; prints numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -p proxy-core --bench rate_limit
cargo test --release -p proxy-app --test limits_memory -- --ignored --nocapture
