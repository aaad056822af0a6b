#!/usr/bin/env bash
# A short workload against the running compose network: COUNT (default 40) token mints from
# client containers on the network (4 at a time, each waited on until committed), then every
# orderer and peer must reach the height of the last acknowledged block, and the gateway's
# queries must read the minted balances.
#
#   deploy/compose/workload.sh [COUNT]
set -euo pipefail
source "$(dirname "$0")/lib.sh"

count="${1:-40}"
tag="w$(date +%s)"
start=$SECONDS
submit "$count" "$tag"
want=$((SUBMIT_MAX_BLOCK + 1))
wait_until 60 "every node at height >= $want" heights_at_least "$want" "${ORDERERS[@]}" "${PEERS[@]}"
check_balances "$tag" "$count"
echo "every node has height >= $want; balances read back; $((SECONDS - start)) s"
print_heights
