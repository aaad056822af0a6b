#!/usr/bin/env bash
# Deploy checks, called from .ci/run:
#  1. Kubernetes: render every kustomize overlay with `kubectl kustomize` and validate each
#     manifest offline against the Kubernetes schemas in strict mode (kubernetes-validate);
#     skipped with a message when kubectl is absent.
#     When Docker answers, the pods those overlays describe also run as containers with the
#     same mounts, security settings and DNS names (deploy/k8s/docker-smoke.sh). The alert
#     rules (components/alerts) pass promtool's unit tests.
#  2. Containers: when `docker info` works, build the image, bring the compose network up,
#     submit transactions and see them committed on every orderer and peer, SIGKILL the Raft
#     leader's container, submit more and see them committed, start it again and see it catch
#     up; then the runbook on the same network (deploy/compose/runbook-test.sh: scale out to 5
#     orderers and in to 3 by the admin consenter commands, a wiped member replaced, a rolling
#     restart, a rolling upgrade (containers recreated from another image tag), a TLS
#     certificate rotation, each checked under a recording workload: no
#     acknowledged transaction lost); tear down. Skipped with a message when no Docker engine
#     answers.
#
#   deploy/ci-check.sh [k8s|compose]   # default: both
#   PROFILE=debug deploy/ci-check.sh     # image and material tools from a debug build (a cold
#                                        # release build takes ~25 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"

k8s_check() {
  if ! command -v kubectl >/dev/null; then
    echo "SKIP kubernetes manifests: kubectl is not installed"
    return 0
  fi
  deploy/k8s/validate.sh
  deploy/k8s/components/alerts/alerts-test.sh
}

k8s_smoke() {
  if ! docker info >/dev/null 2>&1; then
    echo "SKIP k8s pods on Docker: no Docker engine answers (docker info failed)"
    return 0
  fi
  deploy/k8s/docker-smoke.sh
}

compose_check() {
  if ! docker info >/dev/null 2>&1; then
    echo "SKIP compose smoke: no Docker engine answers (docker info failed)"
    return 0
  fi
  if ! command -v docker-compose >/dev/null; then
    echo "SKIP compose smoke: docker-compose is not installed"
    return 0
  fi
  export WEFT_NET WEFT_PROJECT WEFT_NETWORK
  WEFT_NET="$(mktemp -d)/net"
  WEFT_PROJECT="weftci$$"
  WEFT_NETWORK="weftci$$-net"
  source deploy/compose/lib.sh
  trap 'deploy/compose/down.sh --wipe >/dev/null 2>&1 || true; rm -rf "$(dirname "$WEFT_NET")"' EXIT

  if [[ -z "${SKIP_IMAGE:-}" ]]; then
    IMAGE="$WEFT_IMAGE" deploy/build-image.sh | tail -1
  fi
  deploy/compose/up.sh | tail -1

  # Nodes know each other only by service name: no config names an IP except listen-anywhere.
  if grep -rhoE '"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+"' "$WEFT_NET"/orgs/*/*/*/*.toml | grep -v '"0\.0\.0\.0:'; then
    echo "FAIL: a node config names an IP address" >&2
    return 1
  fi

  echo "-- 1. transactions committed on every node"
  submit 8 ci-a
  local want=$((SUBMIT_MAX_BLOCK + 1))
  wait_until 60 "every node at height >= $want" heights_at_least "$want" "${ORDERERS[@]}" "${PEERS[@]}"
  echo "every node has height >= $want"

  echo "-- 2. SIGKILL the leader's container, submit more"
  local victim others=() n
  victim="$(leader)"
  [[ -n "$victim" ]] || { echo "FAIL: no leader" >&2; return 1; }
  for n in "${ORDERERS[@]}"; do [[ "$n" == "$victim" ]] || others+=("$n"); done
  docker kill "$(container_of "$victim")" >/dev/null
  echo "killed $victim (the leader)"
  leader_is_not() { local l; l="$(leader)"; [[ -n "$l" && "$l" != "$1" ]]; }
  wait_until 60 "a new leader among ${others[*]}" leader_is_not "$victim"
  echo "new leader: $(leader)"
  submit 8 ci-b
  want=$((SUBMIT_MAX_BLOCK + 1))
  wait_until 60 "survivors and peers at height >= $want" heights_at_least "$want" "${others[@]}" "${PEERS[@]}"
  echo "survivors and every peer have height >= $want; $victim is down (height $(height "$victim"))"

  echo "-- 3. restart $victim: it catches up"
  docker start "$(container_of "$victim")" >/dev/null
  wait_until 90 "$victim at height >= $want" heights_at_least "$want" "$victim"
  check_balances ci-a 8
  check_balances ci-b 8
  print_heights
  echo "compose smoke: passed"

  echo "-- the alert rules read only metrics these nodes export"
  local mdir
  mdir="$(mktemp -d)"
  for n in "${ORDERERS[@]}" "${PEERS[@]}"; do metrics_of "$n" >"$mdir/$n.txt"; done
  METRICS_DIR="$mdir" deploy/k8s/components/alerts/alerts-test.sh
  rm -rf "$mdir"

  echo "-- 4. the runbook on this network (deploy/compose/runbook-test.sh)"
  deploy/compose/runbook-test.sh
}

case "$what" in
  k8s) k8s_check; k8s_smoke ;;
  compose) compose_check ;;
  all) k8s_check; compose_check; k8s_smoke ;;
  *) echo "usage: $0 [k8s|compose]" >&2; exit 2 ;;
esac
