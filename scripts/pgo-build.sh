#!/usr/bin/env bash
# Builds proxy-app with profile-guided optimisation (PGO) and installs it as OUT. The Fly
# image builds its proxy-app this way; benches/pgo.sh and `benches/run.sh --pgo` measure it.
#
# 1. An instrumented release build (`-Cprofile-generate`) serves each of the load harness's
#    loopback scenarios for 20,000 GETs (`load-harness --train`: the fake tailnet and
#    proxy-app alone, no peers or network namespaces, about a minute). Each proxy-app
#    writes its branch and call counts when it exits; the training report goes to
#    <target>/pgo/training.md.
# 2. llvm-profdata merges them into <target>/pgo/proxy-app-<hash>.profdata. It comes from
#    rustup's llvm-tools component (rustc's own LLVM; added if missing), or else from
#    Debian's llvm-N, N being the major version of rustc's LLVM.
# 3. proxy-app is built again with `-Cprofile-use` and copied to OUT.
#
# Options after OUT go to both proxy-app builds (such as `--locked --no-default-features`).
# Each build has a target directory of its own, under <target>/pgo-generate and
# <target>/pgo-use, and the host's target triple, so that build scripts and proc macros are
# built plainly. Two release builds: about 20 minutes on two cores the first time.
#
#   scripts/pgo-build.sh /usr/local/bin/proxy-app --locked --no-default-features
set -euo pipefail
if [ "$#" -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 OUT [cargo build options for proxy-app]" >&2
  exit 2
fi
out="$1"
shift
# OUT is relative to where the script was started, not to the workspace it builds in.
case "$out" in
  /*) ;;
  *) out="$PWD/$out" ;;
esac
cd "$(dirname "$0")/.."

host="$(rustc -vV | sed -n 's/^host: //p')"
llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
profdata_tool="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata_tool" ] && command -v rustup >/dev/null; then
  rustup component add llvm-tools >&2 || true
fi
if [ ! -x "$profdata_tool" ]; then
  scripts/ensure-packages.sh "llvm-$llvm_major"
  profdata_tool="llvm-profdata-$llvm_major"
fi

target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
work="$target_dir/pgo"
rm -rf "$work"
mkdir -p "$work/raw"

cargo build --release --locked -p load-harness
RUSTFLAGS="-Cprofile-generate=$work/raw" \
  cargo build --release -p proxy-app "$@" --target "$host" --target-dir "$target_dir/pgo-generate"
"$target_dir/release/load-harness" --train \
  --proxy-bin "$target_dir/pgo-generate/$host/release/proxy-app" > "$work/training.md"
if ! compgen -G "$work/raw/*.profraw" >/dev/null; then
  echo "the training wrote no profile (see $work/training.md)" >&2
  exit 1
fi
"$profdata_tool" merge -o "$work/merged.profdata" "$work/raw"/*.profraw
# Named by its content: cargo rebuilds a registry dependency when RUSTFLAGS change, not when
# a file they name does, and every crate must be built with this profile.
profile="$work/proxy-app-$(sha256sum "$work/merged.profdata" | cut -c1-16).profdata"
mv "$work/merged.profdata" "$profile"
echo "profile: $profile (training: $work/training.md)" >&2

RUSTFLAGS="-Cprofile-use=$profile" \
  cargo build --release -p proxy-app "$@" --target "$host" --target-dir "$target_dir/pgo-use"
mkdir -p "$(dirname "$out")"
install -m 0755 "$target_dir/pgo-use/$host/release/proxy-app" "$out"
echo "PGO build: $out" >&2
