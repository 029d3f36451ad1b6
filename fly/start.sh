#!/bin/sh
# Entrypoint on Fly.io: start tailscaled on the kernel TUN device, join the tailnet, then
# hand over to proxy-app, which opens its public port only once tailscaled reports Running
# (`--wait-for-tailnet`, via the LocalAPI socket) and the upstream names have resolved.
#
# Runs as PID 1's child under tini (see the Dockerfile), as root so tailscaled can create
# the TUN device; proxy-app itself runs as the unprivileged user PROXY_USER.
#
# Environment:
#   TS_AUTHKEY        required: a tagged, pre-authorized auth key (set with `fly secrets set`)
#   TS_HOSTNAME       machine name on the tailnet (default: fly-edge)
#   TS_STATE_DIR      tailscaled state (default: /data/tailscale if /data is a mounted volume,
#                     else /var/lib/tailscale)
#   TS_SOCKET         LocalAPI socket (default: /var/run/tailscale/tailscaled.sock)
#   TS_EXTRA_ARGS     extra arguments for `tailscale up`
#   PROXY_CONFIG      proxy-app config (default: /etc/proxy-app/proxy.toml)
#   PROXY_USER        user proxy-app runs as (default: proxy; empty: do not switch user)
#   TAILNET_WAIT      how long proxy-app waits for tailscaled (default: 60s)
set -eu

log() {
  printf 'start.sh: %s\n' "$*" >&2
}

if [ -z "${TS_AUTHKEY:-}" ]; then
  log "TS_AUTHKEY is not set: create a tagged, pre-authorized auth key in the Tailscale admin console and run"
  log "  fly secrets set TS_AUTHKEY=tskey-auth-..."
  exit 64
fi

hostname_on_tailnet="${TS_HOSTNAME:-fly-edge}"
socket="${TS_SOCKET:-/var/run/tailscale/tailscaled.sock}"
config="${PROXY_CONFIG:-/etc/proxy-app/proxy.toml}"
proxy_user="${PROXY_USER-proxy}"
wait_limit="${TAILNET_WAIT:-60s}"
if [ -n "${TS_STATE_DIR:-}" ]; then
  state_dir="$TS_STATE_DIR"
elif [ -d /data ]; then
  state_dir=/data/tailscale
else
  state_dir=/var/lib/tailscale
fi
mkdir -p "$state_dir" "$(dirname "$socket")"

log "starting tailscaled (state in $state_dir)"
tailscaled --state="$state_dir/tailscaled.state" --statedir="$state_dir" --socket="$socket" --tun=tailscale0 --port=41641 &

# `tailscale up` talks to tailscaled over the socket; give tailscaled a moment to create it.
tries=0
until [ -S "$socket" ]; do
  tries=$((tries + 1))
  if [ "$tries" -gt 100 ]; then
    log "tailscaled did not create $socket"
    exit 69
  fi
  sleep 0.1
done

log "joining the tailnet as $hostname_on_tailnet"
# shellcheck disable=SC2086 # TS_EXTRA_ARGS is a list of arguments on purpose.
tailscale --socket="$socket" up --authkey="$TS_AUTHKEY" --hostname="$hostname_on_tailnet" --accept-dns=true ${TS_EXTRA_ARGS:-}

set -- proxy-app run --config "$config" --wait-for-tailnet="$wait_limit"
if [ -n "$proxy_user" ]; then
  set -- setpriv --reuid="$proxy_user" --regid="$proxy_user" --init-groups -- "$@"
fi
log "starting proxy-app"
exec "$@"
