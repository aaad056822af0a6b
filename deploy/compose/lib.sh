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

# /metrics of node $1, fetched from the host at its container's address on the network.
metrics_of() {
  local ip ops
  ip="$(docker inspect -f "{{(index .NetworkSettings.Networks \"$WEFT_NETWORK\").IPAddress}}" "$(container_of "$1")")"
  ops="$(ops_of "$1")"
  curl -fsS --max-time 10 "http://$ip:${ops##*:}/metrics"
}

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

# ---- runbook helpers (deploy/compose/runbook-test.sh) ---------------------------------------

# The devnet binary (material verbs, recording workload, checker) of this checkout; built when
# missing. PROFILE=debug picks the debug build; DEVNET=path overrides.
devnet_bin() {
  local profile="${PROFILE:-release}" target="${CARGO_TARGET_DIR:-$repo_dir/target}"
  local bin="${DEVNET:-$target/$profile/devnet}"
  if [[ ! -x "$bin" ]]; then
    (cd "$repo_dir" && if [[ "$profile" == release ]]; then cargo build --release -q -p chaos-tests --bin devnet; else cargo build -q -p chaos-tests --bin devnet; fi) >&2
  fi
  echo "$bin"
}

# Material written on the host goes to the containers' user (10001), as gen.sh does.
own_material() {
  if [[ "$(id -u)" == 0 ]]; then chown -R 10001:10001 "$WEFT_NET"; else chmod -R a+rX "$WEFT_NET"; fi
}

# orderer admin on the network (material read-only), e.g. `admin consenter add --channel C --node N`.
admin() { cli orderer admin --network /etc/weft/net "$@"; }

# `orderer admin status --json` of CHANNEL (the leader's answer), or nothing.
admin_status() { admin status --channel "$CHANNEL" --json 2>/dev/null; }

# Node $1 is a voter, the leader reports no learners, and a leader exists.
is_voter() {
  admin_status | jq -e --arg n "$1" '.leader != null and (.voters | index($n)) != null and (.learners | length) == 0' >/dev/null
}

# The voters, space separated, sorted.
voters() { admin_status | jq -r '.voters | sort | join(" ")'; }

# Orderer $1 answers on its ops port (/healthz: the process serves).
serves() { cli orderer health --ops "$(ops_of "$1")" >/dev/null 2>&1; }

# Container of service $1 is healthy (its compose health check: /readyz).
healthy() {
  local id
  id="$(container_of "$1")"
  [[ -n "$id" && "$(docker inspect -f '{{.State.Health.Status}}' "$id")" == healthy ]]
}

# Every node in "$@" has at least the height the leader reports now (caught up).
caught_up() {
  local target
  target="$(admin_status | jq -r '.height // empty')"
  [[ -n "$target" ]] && heights_at_least "$target" "$@"
}

# The leader is one of "$@".
leader_among() {
  local l n
  l="$(leader)"
  for n in "$@"; do [[ "$l" == "$n" ]] && return 0; done
  return 1
}

# ---- the recording workload: devnet load in a container, controlled through files ---------

LOAD_DIR=""
load_container() { echo "${WEFT_PROJECT}-load"; }
load_state_is() { [[ "$(cat "$LOAD_DIR/state" 2>/dev/null)" == "$1" ]]; }

# load_start DIR [devnet load options]: starts the workload writing into DIR (acked tx ids).
load_start() {
  LOAD_DIR="$1"
  shift
  mkdir -p "$LOAD_DIR"
  rm -f "$LOAD_DIR"/{pause,stop,state,acked,summary,direct-acked}
  [[ "$(id -u)" == 0 ]] && chown 10001:10001 "$LOAD_DIR" || chmod 777 "$LOAD_DIR"
  docker rm -f "$(load_container)" >/dev/null 2>&1 || true
  docker run -d --name "$(load_container)" --network "$WEFT_NETWORK" \
    -v "$WEFT_NET:/etc/weft/net:ro" -v "$LOAD_DIR:/work" \
    -v "$(devnet_bin):/usr/local/bin/devnet:ro" "$WEFT_IMAGE" \
    devnet load --network /etc/weft/net --dir /work "$@" >/dev/null
  wait_until 60 "the workload running" load_state_is running
}

# Pauses the workload (in-flight calls end) and prints its counts; acked is then complete.
load_pause() {
  touch "$LOAD_DIR/pause"
  wait_until 90 "the workload paused" load_state_is paused
  echo "workload: $(cat "$LOAD_DIR/summary")"
}

load_resume() {
  rm -f "$LOAD_DIR/pause"
  wait_until 60 "the workload running again" load_state_is running
}

# Stops the workload and removes its container (its log is printed on failure).
load_stop() {
  [[ -n "$LOAD_DIR" ]] || return 0
  touch "$LOAD_DIR/stop"
  wait_until 90 "the workload stopped" load_state_is stopped || docker logs --tail 20 "$(load_container)" >&2 || true
  docker rm -f "$(load_container)" >/dev/null 2>&1 || true
}

# verify_acked ORDERER...: every acked tx id is in the chain of these orderers and of every
# peer, and all agree (heights, block hashes, codes, state hash, config). Workload paused.
verify_acked() {
  local list files=(--acked /work/acked)
  list="$(IFS=,; echo "$*")"
  [[ -e "$LOAD_DIR/direct-acked" ]] && files+=(--acked /work/direct-acked)
  docker run --rm --network "$WEFT_NETWORK" -v "$WEFT_NET:/etc/weft/net:ro" -v "$LOAD_DIR:/work:ro" \
    -v "$(devnet_bin):/usr/local/bin/devnet:ro" "$WEFT_IMAGE" \
    devnet verify --network /etc/weft/net "${files[@]}" --orderers "$list" --timeout 120
}

# broadcast_to ORDERER COUNT: envelopes sent straight to ORDERER, each acked within 60 s (a
# follower forwards them to the leader with its own TLS certificate, which the leader accepts
# only from a pinned consenter). Their tx ids join those verify_acked looks for.
broadcast_to() {
  docker run --rm --network "$WEFT_NETWORK" -v "$WEFT_NET:/etc/weft/net:ro" -v "$LOAD_DIR:/work" \
    -v "$(devnet_bin):/usr/local/bin/devnet:ro" "$WEFT_IMAGE" \
    devnet broadcast --network /etc/weft/net --orderer "$1" --count "$2" --timeout 60 --out /work/direct-acked
}
