#!/usr/bin/env bash
# Checks the deployment assets against the real tools and a running modegate:
#   - kubectl kustomize renders every layout offline (egress also with its shared-cache component)
#   - promtool check rules / test rules on the alerts
#   - promtool check metrics on a live /metrics scrape
#   - a real Prometheus on loopback scrapes modegate while traffic flows; its query API must
#     return modegate_requests_total and modegate_policy_decisions_total with the right labels
# Usage: bash deploy/test.sh   (MODEGATE_BIN overrides the binary; default target/debug)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/target/deploy-test"
bin="${MODEGATE_BIN:-$root/target/debug/modegate}"
rm -rf "$work" && mkdir -p "$work"
[ -x "$bin" ] || (cd "$root" && cargo build --quiet --bin modegate)

need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v kubectl >/dev/null || need+=(kubernetes-client)
command -v curl >/dev/null || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package may start its own Prometheus; this test runs one of its own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi

passed=0
check() { echo "ok: $1"; passed=$((passed + 1)); }

echo "== kustomize"
for layout in sidecar egress; do
  kubectl kustomize "$root/deploy/kubernetes/$layout" >"$work/$layout.yaml"
  grep -q "kind: Deployment" "$work/$layout.yaml"
  check "kubectl kustomize deploy/kubernetes/$layout ($(grep -c '^kind:' "$work/$layout.yaml") objects)"
done
grep -q "restartPolicy: Always" "$work/sidecar.yaml"
grep -q "readOnlyRootFilesystem: true" "$work/sidecar.yaml"
for kind in Service PodDisruptionBudget HorizontalPodAutoscaler PodMonitor; do
  grep -q "kind: $kind" "$work/egress.yaml"
done
check "sidecar is native (restartPolicy: Always) and read-only; egress has Service, PDB, HPA, PodMonitor"
# The optional shared mode cache: the egress layout with its component, and the Redis layout.
mkdir -p "$work/egress-shared"
cat >"$work/egress-shared/kustomization.yaml" <<YML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../deploy/kubernetes/egress
components:
  - ../../../deploy/kubernetes/egress/shared-cache
YML
kubectl kustomize "$work/egress-shared" >"$work/egress-shared.yaml"
kubectl kustomize "$root/deploy/kubernetes/redis" >"$work/redis.yaml"
grep -q 'redis_url_env = "MODEGATE_REDIS_URL"' "$work/egress-shared.yaml"
grep -q "name: MODEGATE_REDIS_URL" "$work/egress-shared.yaml"
! grep -q "redis_url_env" "$work/egress.yaml"
grep -q "kind: Deployment" "$work/redis.yaml"
! grep -q "modegate-egress" "$work/redis.yaml"
check "egress with the shared-cache component sets redis_url_env and MODEGATE_REDIS_URL; the Redis layout renders apart from the egress selectors"

echo "== promtool rules"
promtool check rules "$root/deploy/prometheus/alerts.yml"
check "promtool check rules"
(cd "$root/deploy/prometheus" && promtool test rules alerts_test.yml)
check "promtool test rules"
promtool check config "$root/deploy/prometheus/prometheus.yml" >/dev/null
check "promtool check config"

echo "== modegate under traffic"
cat >"$work/modegate.toml" <<TOML
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_secs = 1
[upstream]
base_url = "embedded"
embedded_seed = "$root/config/demo-seed.toml"
[policy]
what_if_mode = "DISPATCH"
[log]
format = "json"
TOML
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
: >"$work/modegate.log"
"$bin" serve --config "$work/modegate.toml" >"$work/modegate.log" 2>&1 &
pids+=($!)
addr() {
  for _ in $(seq 1 200); do
    local a
    a="$(grep -o 'listening on [0-9.:]*' "$1" | sed -n "$2p" | awk '{print $3}')"
    [ -n "$a" ] && { echo "$a"; return; }
    sleep 0.1
  done
  cat "$1" >&2
  return 1
}
proxy="$(addr "$work/modegate.log" 2)"
admin="$(addr "$work/modegate.log" 3)"
traffic() {
  local b="http://$proxy/v1/projects/demo-project"
  for _ in $(seq 1 "$1"); do
    curl -s -o /dev/null -u demo-key:demo-secret "$b/apps/new-app"
    curl -s -o /dev/null -u demo-key:demo-secret "$b/messages?app_id=new-app&contact_id=alice"
    curl -s -o /dev/null -u demo-key:demo-secret "$b/messages?app_id=new-app"
    curl -s -o /dev/null -u demo-key:demo-secret -H 'content-type: application/json' "$b/messages:send" \
      -d '{"app_id":"legacy-app","recipient":{"contact_id":"alice"},"message":{"text_message":{"text":"hi"}}}'
  done
}
traffic 3
curl -s "http://$admin/metrics" >"$work/metrics.txt"
promtool check metrics <"$work/metrics.txt"
check "promtool check metrics on a live scrape (no lint problems)"

echo "== real Prometheus scraping modegate"
prom_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cp "$root/deploy/prometheus/alerts.yml" "$work/alerts.yml"
cat >"$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: modegate
    static_configs:
      - targets: ["$admin"]
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
query() { curl -s --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" || true; }
ready=""
for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1; then ready=yes; break; fi
  sleep 0.5
done
if [ -z "$ready" ]; then
  echo "Prometheus did not become ready" >&2
  tail -20 "$work/prometheus.log" >&2
  exit 1
fi
found=""
for _ in $(seq 1 60); do
  traffic 1
  a="$(query 'modegate_requests_total{job="modegate",operation="list_messages",decision="rejected"}')"
  b="$(query 'modegate_policy_decisions_total{job="modegate",rule="dispatch.list_messages.contact_filter",action="enforce",mode="DISPATCH"}')"
  c="$(query 'modegate_migration_blockers_total{job="modegate",rule="dispatch.send.contact_recipient"}')"
  d="$(query 'up{job="modegate"}')"
  if echo "$a" | grep -q '"result":\[{' && echo "$b" | grep -q '"result":\[{' \
     && echo "$c" | grep -q '"result":\[{' && echo "$d" | grep -q '"value":\[[0-9.]*,"1"\]'; then
    found=yes
    break
  fi
  sleep 1
done
if [ -z "$found" ]; then
  echo "Prometheus did not return the expected series" >&2
  echo "requests: $a" >&2; echo "decisions: $b" >&2; echo "blockers: $c" >&2; echo "up: $d" >&2
  tail -20 "$work/prometheus.log" >&2
  exit 1
fi
check "Prometheus scraped modegate_requests_total{operation,decision}, modegate_policy_decisions_total{rule,action,mode} and modegate_migration_blockers_total{rule}"
rules="$(curl -s "http://127.0.0.1:$prom_port/api/v1/rules" || true)"
echo "$rules" | grep -q '"name":"ModegateUpstreamErrorRatioHigh"'
check "Prometheus loaded the alert rules"

echo "deploy: $passed passed, 0 failed"
