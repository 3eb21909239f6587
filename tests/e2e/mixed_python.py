"""Mixed-project flow, PyPI sinch==2.3.0: in a project with a CONVERSATION app and a DISPATCH
app, get / update / delete each kind of message the SDK's default way (no messages_source),
for messages sent through the gateway and for messages the gateway never saw.

Environment: GATEWAY, SIMULATOR, PROJECT, KEY_ID, KEY_SECRET, STATE (fresh | listed | pinned).
"""
import base64
import json
import os
import urllib.request

from sinch import SinchClient

GW, SIM, PROJECT = os.environ["GATEWAY"], os.environ["SIMULATOR"], os.environ["PROJECT"]
STATE = os.environ["STATE"]
KEY = (os.environ["KEY_ID"], os.environ["KEY_SECRET"])
steps = 0


def step(name):
    global steps
    steps += 1
    print(f"python[mixed, {STATE}] {steps}. {name}", flush=True)


def send_direct(app):
    """A message sent straight to the API by another client: the gateway never sees it."""
    body = {"app_id": app, "recipient": {"identified_by": {"channel_identities": [
        {"channel": "SMS", "identity": "+15550100"}]}}, "message": {"text_message": {"text": "direct"}}}
    auth = base64.b64encode(f"{KEY[0]}:{KEY[1]}".encode()).decode()
    req = urllib.request.Request(f"{SIM}/v1/projects/{PROJECT}/messages:send", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json", "authorization": f"Basic {auth}"})
    return json.loads(urllib.request.urlopen(req).read())["message_id"]


client = SinchClient(project_id=PROJECT, key_id=KEY[0], key_secret=KEY[1])
client.configuration.auth_origin = GW
client.configuration.conversation_origin = GW
conv = client.conversation

if STATE == "listed":
    step("list apps (the gateway learns both modes)")
    conv.apps.list()

for app in ("conversation-app", "dispatch-app"):
    sent = conv.messages.send_text_message(
        app_id=app, text="hello", recipient_identities=[{"channel": "SMS", "identity": "+15550100"}])
    for origin, message_id in (("sent through the gateway", sent.message_id), ("never seen", send_direct(app))):
        step(f"{app}, {origin}: get, update, delete the SDK's default way")
        got = conv.messages.get(message_id=message_id)
        assert got.id == message_id, got
        updated = conv.messages.update(message_id=message_id, metadata="seen")
        assert updated.id == message_id, updated
        conv.messages.delete(message_id=message_id)

print(f"python[mixed, {STATE}]: {steps} steps passed", flush=True)
