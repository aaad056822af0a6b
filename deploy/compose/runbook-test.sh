#!/usr/bin/env bash
# The runbook's operations on the running compose network (deploy/compose/up.sh), in order,
# under a workload that records every transaction an orderer acknowledged (devnet load):
#
#   1. scale out to 4 orderers   devnet extend (material), start orderer4, consenter add
#   2. scale out to 5 orderers   the same for orderer5
#   3. scale in to 3             consenter remove orderer5, remove its container and volume;
#                                then orderer4
#   4. replace a wiped member    orderer2's container and volume removed, started empty: it
#                                rejoins as the consenter it is and catches up
#   5. rolling restart           every orderer restarted in turn, each back before the next
#   6. rolling upgrade           every orderer, then every peer, recreated in turn from another
#                                image tag (same data volume), each back before the next
#   7. TLS certificate rotation  devnet renew-tls orderer3, consenter replace, restart; envelopes
#                                sent straight to orderer3 are acked (a follower forwards with
#                                its certificate, accepted only if pinned); then another member
#                                is stopped so the two left (orderer3 one of them) must elect a
#                                leader and order, orderer3 acks again; the stopped one returns
#
# After each step the workload pauses and `devnet verify` checks that every acked transaction
# is in the chain of every orderer and every peer, that heights and block hashes agree, the
# peers' validation codes and state hashes agree and every node has the same config. Each step
# prints PASS or FAIL; the script exits non-zero at the first failure (with the nodes' view and
# log tails). Every wait has a deadline.
#
#   deploy/compose/up.sh && deploy/compose/runbook-test.sh
#   PROFILE=debug ...    # the devnet binary of the debug build (as the image)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DEVNET="$(devnet_bin)"
STEP=""
STEPS_PASSED=0
START=$SECONDS
work="$(mktemp -d)"

diagnose() {
  echo "-- what the nodes say" >&2
  admin status --channel "$CHANNEL" >&2 || true
  print_heights >&2 || true
  local o
  for o in "${ORDERERS[@]}"; do
    echo "-- docker logs --tail 15 $o" >&2
    docker logs --tail 15 "$(container_of "$o")" 2>&1 | cut -c1-300 >&2 || true
  done
  echo "-- workload log" >&2
  docker logs --tail 10 "$(load_container)" >&2 || true
}

finish() {
  local rc=$?
  if ((rc != 0)); then
    echo "FAIL ${STEP:-setup} (exit $rc)"
    diagnose
  fi
  load_stop || true
  rm -rf "$work"
  if ((rc == 0)); then
    echo "runbook test: passed ($STEPS_PASSED steps, $((SECONDS - START)) s)"
  else
    echo "runbook test: FAILED at ${STEP:-setup} after $STEPS_PASSED passed steps"
  fi
  exit "$rc"
}
trap finish EXIT

# step NAME FUNCTION [ARGS]: the operation, then the no-acked-tx-lost check on a quiet network.
step() {
  STEP="step $((STEPS_PASSED + 1)): $1"
  shift
  local t=$SECONDS
  echo
  echo "== $STEP"
  "$@"
  load_pause
  verify_acked "${ORDERERS[@]}"
  load_resume
  echo "PASS $STEP ($((SECONDS - t)) s)"
  STEPS_PASSED=$((STEPS_PASSED + 1))
  STEP=""
}

without() {
  local drop="$1" o out=()
  shift
  for o in "$@"; do [[ "$o" == "$drop" ]] || out+=("$o"); done
  echo "${out[@]}"
}

# One more orderer: material, container, consenter add, caught up.
scale_out() {
  local name="$1"
  if [[ -e "$WEFT_NET/orgs/OrdererMSP/orderers/$name" ]]; then
    echo "$name material exists (an earlier run); reusing it"
  else
    "$DEVNET" extend --network "$WEFT_NET" --add-orderer "$name" --host "$name"
    own_material
  fi
  dc up -d "$name"
  wait_until 60 "$name serves /healthz" serves "$name"
  admin --timeout 120 consenter add --channel "$CHANNEL" --node "$name"
  ORDERERS+=("$name")
  wait_until 60 "$name a voter" is_voter "$name"
  wait_until 120 "$name caught up" caught_up "$name"
  echo "voters now: $(voters)"
}

# One orderer less: consenter remove first, then its container and volume.
scale_in() {
  local name="$1"
  admin --timeout 120 consenter remove --channel "$CHANNEL" --node "$name"
  read -r -a ORDERERS <<<"$(without "$name" "${ORDERERS[@]}")"
  dc stop -t 10 "$name"
  dc rm -f "$name"
  docker volume rm "${WEFT_PROJECT}_$name" >/dev/null
  echo "voters now: $(voters); $name's container and volume removed"
}

# A member whose volume was lost: removed with its volume, started empty.
replace_wiped() {
  local name="$1"
  dc stop -t 10 "$name"
  dc rm -f "$name"
  docker volume rm "${WEFT_PROJECT}_$name" >/dev/null
  echo "$name's container and volume removed; starting it empty"
  dc up -d "$name"
  wait_until 120 "$name healthy" healthy "$name"
  wait_until 60 "$name a voter" is_voter "$name"
  wait_until 180 "$name caught up" caught_up "$name"
  echo "$name is a voter again at height $(height "$name"); voters: $(voters)"
}

rolling_restart() {
  local o
  for o in "${ORDERERS[@]}"; do
    dc restart -t 10 "$o"
    wait_until 120 "$o healthy" healthy "$o"
    wait_until 60 "a Raft leader" has_leader
    wait_until 120 "$o caught up" caught_up "$o"
    echo "$o back: height $(height "$o"), leader $(leader)"
  done
}

# Each node's container recreated from image $1 (compose sees the image changed), its data
# volume kept; orderers first, then peers, each healthy and caught up before the next.
rolling_upgrade() {
  local image="$1" n id
  for n in "${ORDERERS[@]}" "${PEERS[@]}"; do
    WEFT_IMAGE="$image" dc up -d --no-deps "$n" 2>&1 | grep -v "is up-to-date" || true
    id="$(container_of "$n")"
    [[ "$(docker inspect -f '{{.Config.Image}}' "$id")" == "$image" ]] ||
      { echo "FAIL: $n runs $(docker inspect -f '{{.Config.Image}}' "$id"), not $image" >&2; return 1; }
    wait_until 120 "$n healthy" healthy "$n"
    wait_until 60 "a Raft leader" has_leader
    wait_until 120 "$n caught up" caught_up "$n"
    echo "$n runs $image: height $(height "$n"), leader $(leader)"
  done
}

rotate_tls() {
  local name="$1" other rest h
  "$DEVNET" renew-tls --network "$WEFT_NET" --node "$name"
  own_material
  admin --timeout 120 consenter replace --channel "$CHANNEL" --node "$name"
  dc restart -t 10 "$name"
  wait_until 120 "$name healthy" healthy "$name"
  wait_until 60 "$name a voter" is_voter "$name"
  wait_until 120 "$name caught up" caught_up "$name"
  echo "$name serves with its new certificate: height $(height "$name"), leader $(leader)"
  broadcast_to "$name" 3
  # Its vote is now needed: stop another member (the leader unless that is $name).
  other="$(leader)"
  [[ "$other" != "$name" ]] || other="$(without "$name" "${ORDERERS[@]}" | cut -d' ' -f1)"
  read -r -a rest <<<"$(without "$other" "${ORDERERS[@]}")"
  dc stop -t 10 "$other"
  echo "stopped $other; ${rest[*]} must elect and order"
  wait_until 60 "a leader among ${rest[*]}" leader_among "${rest[@]}"
  h="$(height "$name")"
  wait_until 60 "$name past height $((h + 2)) (ordering goes on)" heights_at_least $((h + 3)) "${rest[@]}"
  echo "leader $(leader); ${rest[*]} at height $(height "$name")"
  broadcast_to "$name" 3
  dc start "$other"
  wait_until 120 "$other healthy" healthy "$other"
  wait_until 120 "$other caught up" caught_up "$other"
}

wait_until 60 "a Raft leader on $CHANNEL (is the network up? deploy/compose/up.sh)" has_leader
echo "network: voters $(voters), leader $(leader); devnet $DEVNET"
load_start "$work" --clients 2 --rate 6 --raw-rate 2
echo "workload started (devnet load: 6 SDK tx/s, 2 raw tx/s, every ack recorded)"

step "scale out to 4 orderers (orderer4)" scale_out orderer4
step "scale out to 5 orderers (orderer5)" scale_out orderer5
step "scale in to 4 (remove orderer5)" scale_in orderer5
step "scale in to 3 (remove orderer4)" scale_in orderer4
step "replace a member whose volume was wiped (orderer2)" replace_wiped orderer2
step "rolling restart of every orderer under load" rolling_restart
# The upgrade's image: a second tag (one version of the code exists; what is exercised is
# the procedure: containers recreated from a new image with their volumes kept).
UPGRADE_IMAGE="${UPGRADE_IMAGE:-${WEFT_IMAGE%:*}:upgrade}"
if ! docker image inspect "$UPGRADE_IMAGE" >/dev/null 2>&1; then
  docker tag "$WEFT_IMAGE" "$UPGRADE_IMAGE"
fi
step "rolling upgrade of every node to $UPGRADE_IMAGE under load" rolling_upgrade "$UPGRADE_IMAGE"
step "TLS certificate rotation of orderer3" rotate_tls orderer3
