#!/usr/bin/env bash
# Real Sinch SDK end-to-end suite: PyPI sinch==2.3.0 and npm @sinch/sdk-core@1.4.0 against
# `modegate serve` in front of `modegate simulate`, once with passthrough auth and once with
# injected credentials (the SDKs then hold no real key), and the SDKs' webhook verifiers on the
# callbacks the gateway forwards. Any failed SDK step fails the run.
#
# Usage: bash tests/e2e/run.sh   (MODEGATE_BIN overrides the binary; default target/debug)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/tests/e2e"
work="$root/target/e2e"
bin="${MODEGATE_BIN:-$root/target/debug/modegate}"
mkdir -p "$work"

[ -x "$bin" ] || (cd "$root" && cargo build --quiet --bin modegate)

echo "== e2e: installing the SDKs"
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
fi
"$work/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" \
  -c "$here/constraints.txt"
mkdir -p "$work/node"
cp "$here/package.json" "$here/package-lock.json" "$work/node/"
# npm ci: exactly the committed lockfile (transitive versions and integrity hashes), or fail.
(cd "$work/node" && npm ci --silent --no-audit --no-fund >/dev/null)
export NODE_PATH="$work/node/node_modules"

pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Waits for the Nth "listening on ADDR" line of a log and prints ADDR.
listening() {
  local log="$1" nth="$2"
  for _ in $(seq 1 200); do
    local addr
    addr="$(grep -o 'listening on [0-9.:]*' "$log" 2>/dev/null | sed -n "${nth}p" | awk '{print $3}')"
    if [ -n "$addr" ]; then echo "$addr"; return 0; fi
    sleep 0.1
  done
  echo "no 'listening on' line in $log:" >&2
  cat "$log" >&2
  return 1
}

: >"$work/simulator.log"
"$bin" simulate --listen 127.0.0.1:0 --seed "$here/seed.toml" >"$work/simulator.log" 2>&1 &
pids+=($!)
sim="$(listening "$work/simulator.log" 1)"
echo "== e2e: simulator on $sim"

passed=0
failed=0
run_mode() {
  local mode="$1" key_id="$2" key_secret="$3"
  local config="$work/gateway-$mode.toml" log="$work/gateway-$mode.log"
  cat >"$config" <<TOML
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_secs = 2
[upstream]
base_url = "http://$sim"
[auth]
mode = "$mode"
token_url = "http://$sim/oauth2/token"
key_id_env = "E2E_SINCH_KEY_ID"
key_secret_env = "E2E_SINCH_KEY_SECRET"
[policy]
create_app_default_mode = "DISPATCH"
[policy.rules]
"dispatch.send.contact_recipient" = "rewrite"
[log]
format = "json"
TOML
  : >"$log"
  E2E_SINCH_KEY_ID=e2e-key E2E_SINCH_KEY_SECRET=e2e-secret "$bin" serve --config "$config" >"$log" 2>&1 &
  local gw_pid=$!
  pids+=("$gw_pid")
  local gw
  gw="$(listening "$log" 1)"
  echo "== e2e: gateway ($mode auth) on $gw"
  export GATEWAY="http://$gw" SIMULATOR="http://$sim" PROJECT=e2e-project APP=dispatch-app \
    CONTACT=alice KEY_ID="$key_id" KEY_SECRET="$key_secret" MODE="$mode"
  if "$work/venv/bin/python" "$here/python_sdk.py"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  if node "$here/node_sdk.js" 2> >(grep -v '^\[Sinch SDK\]\|^HTTP method\|^URL:\|^Response Headers' >&2); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
  kill "$gw_pid" 2>/dev/null || true
  wait "$gw_pid" 2>/dev/null || true
  # The gateway's log must never carry the key or a token.
  if grep -q -e 'e2e-secret' -e 'ZTJlLWtleTplMmUtc2VjcmV0' -e 'eyJhbGciOi' "$log"; then
    echo "secret or token found in $log" >&2
    failed=$((failed + 1))
  fi
}

run_mode passthrough e2e-key e2e-secret
# Inject: the SDKs are configured without the real key; the gateway holds it.
run_mode inject unused-key-id unused-key-secret

# The mixed-project flow: a fresh gateway for each learned state (nothing learned; both apps
# learned from a list; only the DISPATCH app known, pinned), both SDKs in each.
run_mixed() {
  local state="$1"
  local config="$work/gateway-mixed-$state.toml"
  cat >"$config" <<TOML
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_secs = 2
[upstream]
base_url = "http://$sim"
[auth]
token_url = "http://$sim/oauth2/token"
[log]
format = "json"
TOML
  if [ "$state" = pinned ]; then
    printf '[[policy.app]]\nproject_id = "e2e-project"\napp_id = "dispatch-app"\nprocessing_mode = "DISPATCH"\n' >>"$config"
  fi
  for sdk in python node; do
    # One log per gateway, emptied before it starts: the background shell truncates its
    # redirect only when it gets to run, so a reused log could still show the previous
    # gateway's (now closed) address to `listening`.
    local log="$work/gateway-mixed-$state-$sdk.log"
    : >"$log"
    "$bin" serve --config "$config" >"$log" 2>&1 &
    local gw_pid=$!
    pids+=("$gw_pid")
    local gw
    gw="$(listening "$log" 1)"
    export GATEWAY="http://$gw" SIMULATOR="http://$sim" PROJECT=e2e-project KEY_ID=e2e-key \
      KEY_SECRET=e2e-secret STATE="$state"
    local ok=0
    if [ "$sdk" = python ]; then
      "$work/venv/bin/python" "$here/mixed_python.py" && ok=1
    else
      node "$here/mixed_node.js" 2> >(grep -v '^\[Sinch SDK\]\|^HTTP method\|^URL:\|^Response Headers' >&2) && ok=1
    fi
    if [ "$ok" -eq 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    kill "$gw_pid" 2>/dev/null || true
    wait "$gw_pid" 2>/dev/null || true
  done
}
for state in fresh listed pinned; do
  run_mixed "$state"
done

# Callbacks: the SDKs' own webhook verifiers accept what the gateway's callback listener forwards.
export MODEGATE_BIN="$bin" SIMULATOR="http://$sim" PROJECT=e2e-project APP=dispatch-app \
  KEY_ID=e2e-key KEY_SECRET=e2e-secret WORK="$work"
if "$work/venv/bin/python" "$here/callbacks_sdk.py" && node "$here/callbacks_sdk.js"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
fi

echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
