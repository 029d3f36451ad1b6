#!/usr/bin/env bash
# Fleet benchmarks (release): the cost of one decision of a global rate-limit zone against a
# local one (criterion), and, on the whole proxy, CPU per request with a local and a global
# zone and the Redis commands per second one machine sends under load (a real redis-server,
# started by the test). Prints numbers; RESULTS.md beside this file has the last ones.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-packages.sh redis-server
cargo bench -p proxy-core --bench rate_limit -- 'rate_limit/(pass|distinct/10000|global/pass|global/distinct/10000)$'
cargo nextest run --release -p proxy-app --test fleet --run-ignored ignored-only --no-capture fleet_bench
