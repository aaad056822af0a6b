#!/usr/bin/env bash
# Writes the compose network's material into deploy/compose/net (or $WEFT_NET) from
# network.toml: keys, certificates (service names as SANs), node configs, genesis block.
# Files are made readable by the image's user id (10001). Refuses to overwrite: down.sh
# --wipe removes it. DEVNET=path uses that devnet binary instead of the release build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
net="${WEFT_NET:-$here/net}"
target="${CARGO_TARGET_DIR:-$repo/target}"

if [[ -e "$net/network.toml" ]]; then
  echo "material exists: $net (down.sh --wipe starts over)"
  exit 0
fi
profile="${PROFILE:-release}"
devnet="${DEVNET:-$target/$profile/devnet}"
if [[ ! -x "$devnet" ]]; then
  (cd "$repo" && if [[ "$profile" == release ]]; then cargo build --release -q -p chaos-tests --bin devnet; else cargo build -q -p chaos-tests --bin devnet; fi)
fi
"$devnet" generate --spec "$here/network.toml" --out "$net"
# The containers run as 10001 and read their keys; root may hand them over, others make the
# files group/world readable (a dev network only).
if [[ "$(id -u)" == 0 ]]; then
  chown -R 10001:10001 "$net"
else
  chmod -R a+rX "$net"
fi
