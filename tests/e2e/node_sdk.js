// Real-SDK flows through modegate: npm @sinch/sdk-core@1.4.0.
//
// Environment: GATEWAY, SIMULATOR, PROJECT, APP (a DISPATCH app), CONTACT, KEY_ID, KEY_SECRET,
// MODE (passthrough|inject). Exits non-zero on the first failed step.
'use strict';
const assert = require('node:assert/strict');
const { SinchClient } = require('@sinch/sdk-core');

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const GW = env('GATEWAY');
const SIM = env('SIMULATOR');
const APP = env('APP');
const CONTACT = env('CONTACT');
const MODE = process.env.MODE || 'passthrough';
let steps = 0;
const step = (name) => console.log(`node[${MODE}] ${++steps}. ${name}`);

async function main() {
  const sinch = new SinchClient({
    projectId: env('PROJECT'),
    keyId: env('KEY_ID'),
    keySecret: env('KEY_SECRET'),
    authHostname: GW,
    conversationHostname: GW,
  });
  const conv = sinch.conversation;
  const identified = { identified_by: { channel_identities: [{ channel: 'SMS', identity: '+15550100' }] } };
  const text = (t) => ({ text_message: { text: t } });

  step('token fetch through authHostname and create an app without a mode (the gateway pins it)');
  const created = await conv.app.create({
    appCreateRequestBody: {
      display_name: 'e2e node app',
      channel_credentials: [{ channel: 'SMS', static_bearer: { claimed_identity: 'x', token: 'y' } }],
    },
  });
  assert.equal(created.processing_mode, 'DISPATCH');

  step('send a text message with identified_by');
  const sent = await conv.messages.send({
    sendMessageRequestBody: { app_id: APP, recipient: identified, message: text('hello') },
  });
  assert.ok(sent.message_id);

  step('send to a DISPATCH app with a contact_id (rewritten by the gateway)');
  const byContact = await conv.messages.send({
    sendMessageRequestBody: { app_id: APP, recipient: { contact_id: CONTACT }, message: text('legacy') },
  });
  assert.ok(byContact.message_id);

  step('list messages with a contact_id on a DISPATCH app raises the API error with the rule id');
  await assert.rejects(
    async () => { await conv.messages.list({ app_id: APP, contact_id: CONTACT }); },
    (err) => {
      assert.equal(err.statusCode, 400);
      const data = JSON.parse(err.data);
      assert.equal(data.error.status, 'INVALID_ARGUMENT');
      assert.equal(data.error.details[0].value, 'dispatch.list_messages.contact_filter');
      return true;
    },
  );

  step('get a DISPATCH message the SDK\'s default way (messages_source=CONVERSATION_SOURCE)');
  const got = await conv.messages.get({ message_id: sent.message_id });
  assert.equal(got.id, sent.message_id);

  step('token expiry in the middle: the SDK re-authenticates (or the gateway does) and continues');
  const r = await fetch(`${SIM}/_simulator/tokens:expire`, { method: 'POST' });
  assert.equal(r.status, 200);
  const again = await conv.messages.send({
    sendMessageRequestBody: { app_id: APP, recipient: identified, message: text('after expiry') },
  });
  assert.ok(again.message_id);
  const gotAgain = await conv.messages.get({ message_id: again.message_id });
  assert.equal(gotAgain.id, again.message_id);

  console.log(`node[${MODE}]: ${steps} steps passed`);
}

main().catch((err) => {
  console.error(`node[${MODE}] step ${steps} failed:`, err && (err.stack || err));
  process.exit(1);
});
