// What the gateway forwarded (written by callbacks_sdk.py), checked by @sinch/sdk-core@1.4.0's
// own Conversation webhook verifier, with the raw body and with the body already parsed (as an
// Express JSON middleware would hand it over).
//
// Environment: WORK. Exits non-zero on the first failed step.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { ConversationCallbackWebhooks } = require('@sinch/sdk-core');

const received = JSON.parse(fs.readFileSync(path.join(process.env.WORK, 'callbacks.json'), 'utf8'));
const webhooks = new ConversationCallbackWebhooks('e2e-webhook-secret');
let steps = 0;
const step = (name) => console.log(`node[callbacks] ${++steps}. ${name}`);

step(`the SDK's verifier accepts all ${received.length} forwarded callbacks (raw body)`);
assert.ok(received.length >= 3);
for (const r of received) {
  assert.equal(webhooks.validateAuthenticationHeader(r.headers, r.body), true, r.body);
}

step('and with the body already parsed');
for (const r of received) {
  assert.equal(webhooks.validateAuthenticationHeader(r.headers, JSON.parse(r.body)), true);
}

step('parseEvent names the trigger and keeps the pseudo contact id');
const triggers = received.map((r) => webhooks.parseEvent(JSON.parse(r.body)).trigger).sort();
assert.deepEqual(triggers, ['MESSAGE_DELIVERY', 'MESSAGE_INBOUND', 'MESSAGE_SUBMIT']);
const inbound = received.map((r) => JSON.parse(r.body)).find((b) => b.message);
assert.match(inbound.message.contact_id, /^mgpc_[A-Za-z0-9_-]+$/);

step('another secret is refused');
const other = new ConversationCallbackWebhooks('not-the-secret');
assert.equal(other.validateAuthenticationHeader(received[0].headers, received[0].body), false);
console.log(`node[callbacks]: ${steps} steps passed`);
