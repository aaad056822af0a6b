# Shared by up.sh, down.sh, workload.sh and deploy/ci-check.sh (sourced, not run).
# Every wait has a deadline.

compose_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "$compose_dir/../.." && pwd)"
export WEFT_NET="${WEFT_NET:-$compose_dir/net}"
export WEFT_IMAGE="${WEFT_IMAGE:-weft:dev}"
export WEFT_NETWORK="${WEFT_NETWORK:-weft-net}"
WEFT_PROJECT="${WEFT_PROJECT:-weft}"
ORDERERS=(orderer1 orderer2 orderer3)
PEERS=(org1-peer0 org1-peer1 org2-peer0 org2-peer1)
CHANNEL=mychannel

dc() { docker-compose -p "$WEFT_PROJECT" -f "$compose_dir/docker-compose.yml" "$@"; }

# A one-shot client container on the network with the material (read-only).
cli() { docker run --rm --network "$WEFT_NETWORK" -v "$WEFT_NET:/etc/weft/net:ro" "$WEFT_IMAGE" "$@"; }

ops_of() { case "$1" in orderer*) echo "$1:8450" ;; *) echo "$1:8451" ;; esac; }

# Height of CHANNEL on node $1 (from its ops /status), or -1 when it does not answer.
height() {
  local out
  out="$(cli peer channel list --ops "$(ops_of "$1")" --json 2>/dev/null)" || { echo -1; return; }
  echo "$out" | jq -r --arg ch "$CHANNEL" '(.channels[] | select(.id == $ch) | .height) // -1'
}

# The leader of CHANNEL as the orderers report it (empty when none).
leader() {
  cli orderer admin --network /etc/weft/net status --channel "$CHANNEL" --json 2>/dev/null |
    jq -r '.leader // empty'
}

# wait_until SECS DESCRIPTION COMMAND...: retries COMMAND every second until it succeeds.
wait_until() {
  local secs="$1" what="$2" start=$SECONDS
  shift 2
  until "$@"; do
    if ((SECONDS - start >= secs)); then
      echo "timed out after ${secs}s waiting for: $what" >&2
      return 1
    fi
    sleep 1
  done
}

container_of() { dc ps -q "$1"; }

all_healthy() {
  local s id
  for s in "${ORDERERS[@]}" "${PEERS[@]}"; do
    id="$(container_of "$s")"
    [[ -n "$id" ]] || return 1
    [[ "$(docker inspect -f '{{.State.Health.Status}}' "$id")" == healthy ]] || return 1
  done
}

has_leader() { [[ -n "$(leader)" ]]; }

# Every node in "$@" has height >= MIN (first argument).
heights_at_least() {
  local min="$1" n h
  shift
  for n in "$@"; do
    h="$(height "$n")"
    ((h >= min)) || return 1
  done
}

print_heights() {
  local n
  for n in "${ORDERERS[@]}" "${PEERS[@]}"; do printf '  %-12s height %s\n' "$n" "$(height "$n")"; done
}

# submit COUNT TAG: COUNT token mints (4 clients at a time), each waited on until committed.
# Prints one line per tx; sets SUBMIT_MAX_BLOCK to the highest block a tx was committed in and
# fails when any was not acknowledged VALID.
submit() {
  local count="$1" tag="$2" log
  log="$(mktemp)"
  seq 1 "$count" | xargs -P 4 -I{} docker run --rm --network "$WEFT_NETWORK" \
    -v "$WEFT_NET:/etc/weft/net:ro" "$WEFT_IMAGE" \
    peer invoke --network /etc/weft/net -c token -f mint "$tag-{}" 100 >"$log" 2>&1 || true
  local ok
  ok="$(grep -c ': VALID$' "$log" || true)"
  SUBMIT_MAX_BLOCK="$(grep -o 'committed in block [0-9]*' "$log" | awk '{print $4}' | sort -n | tail -1)"
  echo "submitted $count, acknowledged VALID $ok, highest block ${SUBMIT_MAX_BLOCK:-none}"
  if ((ok != count)); then
    grep -v ': VALID$' "$log" | head -5 >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

# check_balances TAG COUNT: every minted account of TAG holds 100 (queried through the gateway).
check_balances() {
  local tag="$1" count="$2" i b
  for i in 1 "$count"; do
    b="$(cli peer query --network /etc/weft/net -c token -f balance "$tag-$i")"
    [[ "$b" == 100 ]] || { echo "balance of $tag-$i is '$b', want 100" >&2; return 1; }
  done
}
