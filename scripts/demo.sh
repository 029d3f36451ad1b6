#!/usr/bin/env bash
# Builds proxy-app and runs its built-in demo (a fake tailnet in-process, the proxy in front).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-packages.sh cmake clang
exec cargo run --release -p proxy-app -- demo "$@"
