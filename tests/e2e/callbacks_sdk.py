"""Callbacks through modegate, checked by the real SDKs' webhook verifiers (PyPI sinch==2.3.0;
callbacks_sdk.js does the same with @sinch/sdk-core).

The simulator signs and delivers callbacks for a DISPATCH app to a gateway's callback listener,
which verifies them, fills pseudo ids and signs them again; a receiver here gets what the
gateway forwards and the SDK must accept it. What was received is written to
$WORK/callbacks.json for the Node check.

Environment: MODEGATE_BIN, SIMULATOR, PROJECT, APP (a DISPATCH app), KEY_ID, KEY_SECRET, WORK.
Exits non-zero on the first failed step.
"""
import base64
import http.server
import json
import os
import re
import subprocess
import threading
import time
import urllib.request

from sinch import SinchClient

SIM = os.environ["SIMULATOR"]
PROJECT = os.environ["PROJECT"]
APP = os.environ["APP"]
WORK = os.environ["WORK"]
SECRET = "e2e-webhook-secret"
ID_KEY = "5a" * 32
BASIC = "Basic " + base64.b64encode(
    f"{os.environ['KEY_ID']}:{os.environ['KEY_SECRET']}".encode()
).decode()

steps = 0
received = []


def step(name):
    global steps
    steps += 1
    print(f"python[callbacks] {steps}. {name}", flush=True)


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def call(method, url, body=None, auth=True):
    headers = {"content-type": "application/json"}
    if auth:
        headers["authorization"] = BASIC
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, method=method, data=data, headers=headers)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
consumer = f"http://127.0.0.1:{receiver.server_address[1]}/events"

config = os.path.join(WORK, "gateway-callbacks.toml")
with open(config, "w") as f:
    f.write(f"""[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_secs = 1
[upstream]
base_url = "{SIM}"
[callbacks]
listen = "127.0.0.1:0"
id_key_env = "E2E_ID_KEY"
[[callbacks.webhook]]
path = "/sinch/events"
target = "{consumer}"
secret_env = "E2E_WEBHOOK_SECRET"
fill_ids = "pseudo"
[log]
format = "json"
""")
log_path = os.path.join(WORK, "gateway-callbacks.log")
log = open(log_path, "w")
gateway = subprocess.Popen(
    [os.environ["MODEGATE_BIN"], "serve", "--config", config],
    stdout=log,
    stderr=log,
    env={**os.environ, "E2E_WEBHOOK_SECRET": SECRET, "E2E_ID_KEY": ID_KEY},
)
webhook_id = None
try:
    step("the gateway's callback listener comes up")
    listener = None
    for _ in range(200):
        for line in open(log_path):
            if '"callbacks"' in line and "listening on" in line:
                listener = re.search(r"listening on ([0-9.:]+)", line).group(1)
        if listener:
            break
        time.sleep(0.05)
    assert listener, open(log_path).read()

    step("the DISPATCH app's webhook points at the gateway, with a secret")
    hook = call("POST", f"{SIM}/v1/projects/{PROJECT}/webhooks", {
        "app_id": APP,
        "target": f"http://{listener}/sinch/events",
        "target_type": "HTTP",
        "triggers": ["MESSAGE_INBOUND", "MESSAGE_SUBMIT", "MESSAGE_DELIVERY"],
        "secret": SECRET,
    })
    webhook_id = hook["id"]

    step("an MO and a send produce three signed callbacks")
    call("POST", f"{SIM}/_simulator/inbound", {
        "project_id": PROJECT, "app_id": APP, "channel": "SMS",
        "identity": "15550123", "text": "hello from a phone",
    }, auth=False)
    call("POST", f"{SIM}/v1/projects/{PROJECT}/messages:send", {
        "app_id": APP,
        "recipient": {"identified_by": {"channel_identities": [
            {"channel": "SMS", "identity": "15550123"}]}},
        "message": {"text_message": {"text": "a reply"}},
    })
    for _ in range(200):
        if len(received) >= 3:
            break
        time.sleep(0.05)
    assert len(received) >= 3, received

    step("the SDK's verifier accepts every forwarded callback and parses it")
    events = SinchClient(
        project_id=PROJECT, key_id="unused", key_secret="unused"
    ).conversation.sinch_events(SECRET)
    contact_ids = set()
    for r in received:
        assert events.validate_authentication_header(r["headers"], r["body"]), r
        event = events.parse_event(r["body"])
        payload = json.loads(r["body"])
        inner = next(v for v in payload.values() if isinstance(v, dict) and "processing_mode" in v)
        assert inner["processing_mode"] == "DISPATCH", inner
        assert inner["contact_id"].startswith("mgpc_"), inner
        contact_ids.add(inner["contact_id"])
        assert event is not None

    step("one identity, one pseudo contact id across MO and receipts")
    assert len(contact_ids) == 1, contact_ids

    step("a changed byte fails the SDK's verifier")
    # Callbacks arrive in any order: tamper with the MO, whichever it is.
    mo = next(r for r in received if b"hello from a phone" in r["body"])
    tampered = mo["body"].replace(b"hello", b"jello")
    assert tampered != mo["body"]
    assert not events.validate_authentication_header(mo["headers"], tampered)

    with open(os.path.join(WORK, "callbacks.json"), "w") as f:
        json.dump([
            {"headers": r["headers"], "body": r["body"].decode()} for r in received
        ], f)
finally:
    if webhook_id:
        call("DELETE", f"{SIM}/v1/projects/{PROJECT}/webhooks/{webhook_id}")
    gateway.terminate()
    gateway.wait(timeout=10)
    receiver.shutdown()

with open(log_path) as f:
    text = f.read()
assert SECRET not in text and ID_KEY not in text and "15550123" not in text, "secret in the log"
print(f"python[callbacks]: {steps} steps passed", flush=True)
