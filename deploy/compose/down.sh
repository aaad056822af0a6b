#!/usr/bin/env bash
# One command down: stops and removes the containers (orderer4/5 of the runbook's scale-out
# included), the network and the data volumes.
# --wipe also deletes the generated material (the next up.sh generates a new network).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# The runbook test's workload container (not a compose service) holds the network.
docker rm -f "$(load_container)" >/dev/null 2>&1 || true
dc down -v --remove-orphans
if [[ "${1:-}" == "--wipe" ]]; then
  rm -rf "$WEFT_NET"
  echo "material removed: $WEFT_NET"
fi
