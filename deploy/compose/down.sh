#!/usr/bin/env bash
# One command down: stops and removes the containers, the network and the data volumes.
# --wipe also deletes the generated material (the next up.sh generates a new network).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

dc down -v --remove-orphans
if [[ "${1:-}" == "--wipe" ]]; then
  rm -rf "$WEFT_NET"
  echo "material removed: $WEFT_NET"
fi
