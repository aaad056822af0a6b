#!/usr/bin/env bash
# One command up: material (gen.sh, once), the image (build-image.sh when it is missing), the
# 7 containers, then waits until every node is healthy and the channel has a Raft leader.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$compose_dir/gen.sh"
if ! docker image inspect "$WEFT_IMAGE" >/dev/null 2>&1; then
  IMAGE="$WEFT_IMAGE" "$repo_dir/deploy/build-image.sh"
fi
dc up -d
wait_until 120 "every node healthy" all_healthy
wait_until 60 "a Raft leader on $CHANNEL" has_leader
echo "network up: leader $(leader); material $WEFT_NET; network $WEFT_NETWORK"
dc ps
