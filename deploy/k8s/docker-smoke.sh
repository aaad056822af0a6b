#!/usr/bin/env bash
# Runs the pods the overlays describe as containers, with the files laid out exactly as the
# pods mount them (the ConfigMap at /etc/weft/config, each member's Secrets projected under
# /etc/weft/secrets/POD/{tls,msp}/), the pod's security settings (user 10001, read-only root,
# no capabilities, no privilege escalation), `args` with $(POD_NAME) expanded, and each pod's
# headless-Service DNS name as a network alias. Proves the material, the per-pod configs and
# the probe endpoints without a cluster: orderers-3 elects a leader, every pod's /healthz and
# /readyz answer 200, token mints submitted by a client container (the material's
# network.toml: headless-Service names) commit on the orderers and on peer-org's and
# peer-org2's peers (one of each org gossip-only).
#
#   deploy/k8s/docker-smoke.sh   (needs the image: deploy/build-image.sh; skips without Docker)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
IMAGE="${WEFT_IMAGE:-weft:dev}"
NS="${NAMESPACE:-weft}"
DOMAIN="${CLUSTER_DOMAIN:-cluster.local}"
net="weftk8s$$"

docker info >/dev/null 2>&1 || { echo "SKIP k8s docker smoke: no Docker engine answers"; exit 0; }
"$here/material.sh"
tmp="$(mktemp -d)"
cleanup() {
  docker ps -aq --filter "label=weft.smoke=$net" | xargs -r docker rm -f >/dev/null
  docker network rm "$net" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
docker network create "$net" >/dev/null

# run_pod OVERLAY POD KIND SERVICE: one container as the StatefulSet would run pod POD.
run_pod() {
  local overlay="$1" pod="$2" kind="$3" svc="$4" m="$here/overlays/$1/material" s
  mkdir -p "$tmp/$pod/secrets"
  cp -a "$m/config" "$tmp/$pod/config"
  for s in "$m"/secrets/*; do # orderer-0-tls -> secrets/POD-OF-IT/tls
    local base part owner
    base="$(basename "$s")"; part="${base##*-}"; owner="${base%-*}"
    mkdir -p "$tmp/$pod/secrets/$(prefix_of "$pod" "$kind")$owner/$part"
    cp "$s"/* "$tmp/$pod/secrets/$(prefix_of "$pod" "$kind")$owner/$part/"
  done
  chown -R root:10001 "$tmp/$pod"; chmod -R u=rX,g=rX,o= "$tmp/$pod"
  docker run -d --name "$net-$pod" --label "weft.smoke=$net" --network "$net" \
    --network-alias "$pod.$svc.$NS.svc.$DOMAIN" --hostname "$pod" \
    --user 10001:10001 --read-only --cap-drop ALL --security-opt no-new-privileges:true \
    -e POD_NAME="$pod" -e MALLOC_ARENA_MAX=2 \
    -v "$tmp/$pod/config:/etc/weft/config:ro" -v "$tmp/$pod/secrets:/etc/weft/secrets:ro" \
    --tmpfs /var/lib/weft:uid=10001,gid=10001 \
    -p "127.0.0.1::$([[ $kind == orderer ]] && echo 8450 || echo 8451)" \
    "$IMAGE" "$kind" start --config "/etc/weft/config/$pod.toml" >/dev/null
}
prefix_of() { [[ "$2" == peer ]] && echo "${1%%peer-*}" || true; }
ops_url() { echo "http://$(docker port "$net-$1" | head -1 | awk '{print $3}')"; }
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$(ops_url "$1")$2" || true; }
wait_for() { # SECS WHAT CMD...
  local secs="$1" what="$2" start=$SECONDS; shift 2
  until "$@"; do ((SECONDS - start < secs)) || { echo "timed out: $what" >&2; docker logs --tail 20 "$net-${pod:-orderer-0}" >&2 || true; return 1; }; sleep 1; done
}
height() { curl -s --max-time 3 "$(ops_url "$1")/status" | jq -r '.channels.mychannel.height // -1'; }
all_ready() { local p; for p in "$@"; do [[ "$(code "$p" /readyz)" == 200 ]] || return 1; done; }

for i in 0 1 2; do run_pod orderers-3 "orderer-$i" orderer orderer-headless; done
for i in 0 1; do run_pod peer-org "org1-peer-$i" peer org1-peer-headless; done
for i in 0 1; do run_pod peer-org2 "org2-peer-$i" peer org2-peer-headless; done
pods=(orderer-0 orderer-1 orderer-2 org1-peer-0 org1-peer-1 org2-peer-0 org2-peer-1)
wait_for 90 "every pod's /readyz 200" all_ready "${pods[@]}"

# A client as an operator would run one: the generated network dir, names resolved by DNS.
cp -a "$here/overlays/orderers-3/material/network" "$tmp/net"
chown -R 10001:10001 "$tmp/net"
count=6
for i in $(seq 1 "$count"); do
  docker run --rm --network "$net" -v "$tmp/net:/net:ro" "$IMAGE" \
    peer invoke --network /net -c token -f mint "k8s-$i" 100 | grep committed
done
at_least() { local p; for p in "${pods[@]}"; do (($(height "$p") >= $1)) || return 1; done; }
want="$(height orderer-0)"
wait_for 60 "every pod at height $want" at_least "$want"
for p in "${pods[@]}"; do
  printf '  %-12s /healthz %s  /readyz %s  height %s\n' "$p" "$(code "$p" /healthz)" "$(code "$p" /readyz)" "$(height "$p")"
done
leader="$(curl -s "$(ops_url orderer-0)/status" | jq -c '.channels.mychannel | {role, leader} ' 2>/dev/null || true)"
echo "orderer-0 view: $leader"
echo "k8s docker smoke: passed (pods as the manifests run them, names from the headless Services)"
