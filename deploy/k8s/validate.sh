#!/usr/bin/env bash
# Renders every overlay with `kubectl kustomize` (offline) and validates every manifest
# against the Kubernetes schemas in strict mode (kubernetes-validate, bundled schemas, no
# network): an unknown field is an error. The ServiceMonitor and PrometheusRule (CRDs,
# overlays/monitoring) have no bundled schema: they are checked to render, and reported; the
# alert rules themselves are checked by promtool (components/alerts/alerts-test.sh).
#
#   deploy/k8s/validate.sh            # generates the material first when it is missing
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
K8S_VERSION="${K8S_VERSION:-1.30.0}"

command -v kubectl >/dev/null || { echo "SKIP kubernetes manifests: kubectl is not installed"; exit 0; }
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet kubernetes-validate
fi
"$here/material.sh"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
for overlay in orderers-3 orderers-5 peer-org peer-org2 monitoring; do
  kubectl kustomize "$here/overlays/$overlay" >"$out/$overlay.yaml"
  kinds="$(grep -c '^kind:' "$out/$overlay.yaml")"
  log="$out/$overlay.log"
  if kubernetes-validate --strict -k "$K8S_VERSION" "$out/$overlay.yaml" >"$log" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  errors="$(grep -c '^ERROR' "$log" || true)"
  passed="$(grep -c '^INFO.*passed' "$log" || true)"
  unchecked="$(grep '^WARN.*find schema' "$log" | sed -E 's/.*kind ([A-Za-z]+) with api version ([^ ]+).*/\1 (\2)/' | sort -u | paste -sd, - || true)"
  printf '%-11s %2d manifests, %2d valid (strict, k8s %s), %d errors%s\n' \
    "$overlay" "$kinds" "$passed" "$K8S_VERSION" "$errors" "${unchecked:+; no schema: $unchecked}"
  if ((rc != 0 || errors > 0)); then
    grep -E '^(ERROR|WARN)' "$log" >&2 || cat "$log" >&2
    status=1
  fi
done
exit "$status"
