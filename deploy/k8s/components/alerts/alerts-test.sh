#!/usr/bin/env bash
# Checks the alert rules with promtool (from Debian's `prometheus` package, installed when
# missing and apt-get is there): the rule file is valid, and every alert fires on the failure it
# names and stays quiet on a healthy cluster (alerts.test.yaml). With METRICS_DIR set, also
# checks that every metric the rules read is exported by the /metrics dumps in that directory
# (one file per node, taken from running nodes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v promtool >/dev/null; then
  if command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null
  fi
fi
command -v promtool >/dev/null || { echo "SKIP alert rules: promtool is not installed"; exit 0; }
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The PrometheusRule's spec is a plain Prometheus rule file.
python3 - "$here/prometheusrule.yaml" "$work/rules.yaml" <<'PY'
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
assert rule["kind"] == "PrometheusRule", rule["kind"]
yaml.safe_dump(rule["spec"], open(sys.argv[2], "w"), sort_keys=False)
PY
cp "$here/alerts.test.yaml" "$work/"
promtool check rules "$work/rules.yaml"
promtool test rules "$work/alerts.test.yaml"

# Every alert has a test that expects it to fire.
missing=""
for alert in $(grep -oP '^\s+- alert: \K\w+' "$here/prometheusrule.yaml"); do
  python3 - "$here/alerts.test.yaml" "$alert" <<'PY' || missing="$missing $alert"
import sys, yaml
tests = yaml.safe_load(open(sys.argv[1]))["tests"]
fired = any(t["alertname"] == sys.argv[2] and t.get("exp_alerts")
            for case in tests for t in case.get("alert_rule_test", []))
sys.exit(0 if fired else 1)
PY
done
[ -z "$missing" ] || { echo "alerts never shown to fire in alerts.test.yaml:$missing" >&2; exit 1; }

if [ -n "${METRICS_DIR:-}" ]; then
  exported="$(cat "$METRICS_DIR"/* | grep -oP '^weft_\w+' | sed -E 's/_(bucket|sum|count)$//' | sort -u)"
  used="$(grep -oP 'weft_\w+' "$work/rules.yaml" | sort -u)"
  unknown="$(comm -23 <(echo "$used") <(echo "$exported"))"
  [ -z "$unknown" ] || { echo "the rules read metrics no node exports: $unknown" >&2; exit 1; }
  echo "every metric the rules read ($(echo "$used" | wc -l)) is exported by the running nodes"
fi
echo "alert rules: valid, every alert fires on its failure and stays quiet when healthy"
