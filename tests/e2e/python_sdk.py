"""Real-SDK flows through modegate: PyPI sinch==2.3.0.

Environment: GATEWAY (gateway origin), SIMULATOR (simulator origin, for the token-expiry
control), PROJECT, APP (a DISPATCH app), CONTACT, KEY_ID, KEY_SECRET, MODE (passthrough|inject).
Exits non-zero on the first failed step.
"""
import os
import sys
import urllib.request

from sinch import SinchClient
from sinch.domains.conversation.api.v1.exceptions import ConversationException

GW = os.environ["GATEWAY"]
SIM = os.environ["SIMULATOR"]
PROJECT = os.environ["PROJECT"]
APP = os.environ["APP"]
CONTACT = os.environ["CONTACT"]
MODE = os.environ.get("MODE", "passthrough")

steps = 0


def step(name):
    global steps
    steps += 1
    print(f"python[{MODE}] {steps}. {name}", flush=True)


def expire_tokens():
    req = urllib.request.Request(f"{SIM}/_simulator/tokens:expire", method="POST", data=b"")
    urllib.request.urlopen(req).read()


client = SinchClient(
    project_id=PROJECT,
    key_id=os.environ["KEY_ID"],
    key_secret=os.environ["KEY_SECRET"],
)
client.configuration.auth_origin = GW
client.configuration.conversation_origin = GW
conv = client.conversation
identities = [{"channel": "SMS", "identity": "+15550100"}]

step("token fetch through auth_origin and create an app without a mode (the gateway pins it)")
created = conv.apps.create(
    display_name="e2e python app",
    channel_credentials={"SMS": {"claimed_identity": "x", "token": "y"}},
)
assert str(created.processing_mode).endswith("DISPATCH"), created.processing_mode

step("send a text message with identified_by")
sent = conv.messages.send_text_message(app_id=APP, text="hello", recipient_identities=identities)
assert sent.message_id, sent

step("send to a DISPATCH app with a contact_id (rewritten by the gateway)")
by_contact = conv.messages.send_text_message(app_id=APP, text="legacy", contact_id=CONTACT)
assert by_contact.message_id, by_contact

step("list messages with a contact_id on a DISPATCH app raises the API error with the rule id")
try:
    conv.messages.list(app_id=APP, contact_id=CONTACT)
    sys.exit("listing by contact_id on a DISPATCH app should have failed")
except ConversationException as e:
    assert e.response_status_code == 400, e.response_status_code
    assert "INVALID_ARGUMENT" in str(e), str(e)
    body = e.http_response.body
    assert body["error"]["details"][0]["value"] == "dispatch.list_messages.contact_filter", body

step("get a DISPATCH message the SDK's default way (no messages_source)")
got = conv.messages.get(message_id=sent.message_id)
assert got.id == sent.message_id, got

step("token expiry in the middle: the SDK re-authenticates (or the gateway does) and continues")
expire_tokens()
again = conv.messages.send_text_message(app_id=APP, text="after expiry", recipient_identities=identities)
assert again.message_id, again
got = conv.messages.get(message_id=again.message_id)
assert got.id == again.message_id

print(f"python[{MODE}]: {steps} steps passed", flush=True)
