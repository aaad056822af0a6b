#!/usr/bin/env bash
# Generates the material the overlays mount and lays it out as kustomize components
# (overlays/*/material/, never committed: it holds private keys):
#   - ConfigMap `orderer-config` / `peer-config`: one TOML per pod (its node id, gossip role,
#     and absolute paths to the mounted files), the channel genesis blocks, every org's TLS CA.
#   - Secrets `<pod>-tls` and `<pod>-msp` of type kubernetes.io/tls in the layout cert-manager
#     writes: tls.crt, tls.key, ca.crt (the issuing CA: the org's TLS CA, resp. its CA).
#   - A patch setting the StatefulSet's replicas and its projected `secrets` volume.
# Two networks: `weft3` (3 orderers, Org1MSP and Org2MSP with 2 peers each, peer-1
# gossip-only) for overlays orderers-3, peer-org (Org1MSP) and peer-org2 (Org2MSP), `weft5` (5 orderers, same
# orgs) for orderers-5. Hosts are the headless Services' per-pod names in NAMESPACE.
#
#   NAMESPACE=weft CLUSTER_DOMAIN=cluster.local deploy/k8s/material.sh [--force]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
ns="${NAMESPACE:-weft}"
domain="${CLUSTER_DOMAIN:-cluster.local}"
target="${CARGO_TARGET_DIR:-$repo/target}"
profile="${PROFILE:-release}"
devnet="${DEVNET:-$target/$profile/devnet}"

if [[ -e "$here/overlays/orderers-3/material/kustomization.yaml" && "${1:-}" != --force ]]; then
  echo "material exists (overlays/*/material; --force regenerates)"
  exit 0
fi
if [[ ! -x "$devnet" ]]; then
  (cd "$repo" && if [[ "$profile" == release ]]; then cargo build --release -q -p chaos-tests --bin devnet; else cargo build -q -p chaos-tests --bin devnet; fi)
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

spec() { # spec NAME ORDERERS
  local name="$1" n="$2" i o p
  printf 'name = "%s"\nvalidity_days = 365\n\n[[orderer_orgs]]\nmsp_id = "OrdererMSP"\n' "$name"
  for ((i = 0; i < n; i++)); do
    printf '\n[[orderer_orgs.orderers]]\nname = "orderer-%d"\nhost = "orderer-%d.orderer-headless.%s.svc.%s"\nport = 7050\ncluster_port = 7150\nops_port = 8450\n' \
      "$i" "$i" "$ns" "$domain"
  done
  for o in 1 2; do
    printf '\n[[peer_orgs]]\nmsp_id = "Org%dMSP"\nusers = ["User1"]\n' "$o"
    for p in 0 1; do
      printf '\n[[peer_orgs.peers]]\nname = "peer-%d"\nhost = "org%d-peer-%d.org%d-peer-headless.%s.svc.%s"\nport = 7051\ngossip_port = 7151\nops_port = 8451\norderer_connected = %s\n' \
        "$p" "$o" "$p" "$o" "$ns" "$domain" "$([[ $p == 0 ]] && echo true || echo false)"
    done
  done
  cat <<'TOML'

[[channels]]
id = "mychannel"

[channels.batch]
message_count_max = 500
bytes_preferred_max = 2097152
bytes_absolute_max = 10485760
timeout_ms = 100

[[channels.chaincodes]]
name = "token"
version = "1.0"
endorsement_policy = "AND('Org1MSP.peer', 'Org2MSP.peer')"
TOML
}

for n in 3 5; do
  spec "weft$n" "$n" >"$work/weft$n.toml"
  "$devnet" generate --spec "$work/weft$n.toml" --out "$work/weft$n" >/dev/null
done

python3 "$here/material_layout.py" "$work/weft3" orderer OrdererMSP "" "$here/overlays/orderers-3/material"
python3 "$here/material_layout.py" "$work/weft5" orderer OrdererMSP "" "$here/overlays/orderers-5/material"
python3 "$here/material_layout.py" "$work/weft3" peer Org1MSP org1- "$here/overlays/peer-org/material"
python3 "$here/material_layout.py" "$work/weft3" peer Org2MSP org2- "$here/overlays/peer-org2/material"
# The material an operator's `orderer admin --network DIR` / `peer invoke --network DIR` needs.
for n in 3 5; do
  rm -rf "$here/overlays/orderers-$n/material/network"
  cp -a "$work/weft$n" "$here/overlays/orderers-$n/material/network"
done
echo "material written: overlays/{orderers-3,orderers-5,peer-org,peer-org2}/material (namespace $ns, domain $domain)"
