// Mixed-project flow, npm @sinch/sdk-core 1.4.0: in a project with a CONVERSATION app and a
// DISPATCH app, get / update / delete each kind of message the SDK's default way (it sends
// messages_source=CONVERSATION_SOURCE on all three), for messages sent through the gateway and
// for messages the gateway never saw.
//
// Environment: GATEWAY, SIMULATOR, PROJECT, KEY_ID, KEY_SECRET, STATE (fresh | listed | pinned).
'use strict';

const assert = require('node:assert/strict');
const { SinchClient } = require('@sinch/sdk-core');

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const [GW, SIM, PROJECT, STATE] = ['GATEWAY', 'SIMULATOR', 'PROJECT', 'STATE'].map(env);
let steps = 0;
const step = (name) => console.log(`node[mixed, ${STATE}] ${++steps}. ${name}`);

async function sendDirect(app) {
  const auth = Buffer.from(`${env('KEY_ID')}:${env('KEY_SECRET')}`).toString('base64');
  const res = await fetch(`${SIM}/v1/projects/${PROJECT}/messages:send`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Basic ${auth}` },
    body: JSON.stringify({
      app_id: app,
      recipient: { identified_by: { channel_identities: [{ channel: 'SMS', identity: '+15550100' }] } },
      message: { text_message: { text: 'direct' } },
    }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).message_id;
}

async function main() {
  const sinch = new SinchClient({
    projectId: PROJECT, keyId: env('KEY_ID'), keySecret: env('KEY_SECRET'),
    authHostname: GW, conversationHostname: GW,
  });
  const conv = sinch.conversation;
  if (STATE === 'listed') {
    step('list apps (the gateway learns both modes)');
    await conv.app.list({});
  }
  for (const app of ['conversation-app', 'dispatch-app']) {
    const sent = await conv.messages.send({
      sendMessageRequestBody: {
        app_id: app,
        recipient: { identified_by: { channel_identities: [{ channel: 'SMS', identity: '+15550100' }] } },
        message: { text_message: { text: 'hello' } },
      },
    });
    for (const [origin, id] of [['sent through the gateway', sent.message_id], ['never seen', await sendDirect(app)]]) {
      step(`${app}, ${origin}: get, update, delete the SDK's default way`);
      const got = await conv.messages.get({ message_id: id });
      assert.equal(got.id, id);
      const updated = await conv.messages.update({ message_id: id, updateMessageRequestBody: { metadata: 'seen' } });
      assert.equal(updated.id, id);
      await conv.messages.delete({ message_id: id });
    }
  }
  console.log(`node[mixed, ${STATE}]: ${steps} steps passed`);
}

main().catch((e) => {
  console.error(`node[mixed, ${STATE}] failed:`, e && (e.message || e));
  process.exit(1);
});
