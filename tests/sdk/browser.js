// The official Agents SDK in headless Chromium over WebRTC (its default transport), with only the URL changed.
// esbuild bundles this file into dist/browser.js (tests/test_sdk.py does it); browser.html loads it. Each scenario
// connects with an ek_ client secret, as a browser app does, and resolves to what it saw, for the test to judge.
import { RealtimeAgent, RealtimeSession, tool } from '@openai/agents-realtime';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(pred, ms) {
  const end = Date.now() + ms;
  while (!pred() && Date.now() < end) await sleep(25);
  return pred();
}

function record(session) {
  const seen = {
    events: [], userTranscripts: [], agentTranscripts: [], errors: [], toolCalls: [], handoffs: [], responses: [],
  };
  session.on('transport_event', (ev) => {
    seen.events.push(ev.type);
    if (ev.type === 'conversation.item.input_audio_transcription.completed') seen.userTranscripts.push(ev.transcript);
    if (ev.type === 'response.output_audio_transcript.done') seen.agentTranscripts.push(ev.transcript);
    if (ev.type === 'response.done') seen.responses.push(ev.response);
  });
  session.on('error', (e) => seen.errors.push(String(e?.error?.message ?? e?.error ?? e)));
  session.on('agent_handoff', (_ctx, from, to) => seen.handoffs.push([from.name, to.name]));
  return seen;
}

async function heard(session) {
  const pc = session.transport.connectionState.peerConnection;
  for (const s of (await pc.getStats()).values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'audio') return { packets: s.packetsReceived, energy: s.totalAudioEnergy };
  }
  return null;
}

const weather = (seen) => tool({
  name: 'get_weather',
  description: 'The weather in a city.',
  parameters: { type: 'object', properties: { location: { type: 'string' } }, required: ['location'], additionalProperties: false },
  strict: true,
  execute: async ({ location }) => {
    seen.toolCalls.push(location);
    return JSON.stringify({ forecast: 'dry and windy', temperature: '12 degrees' });
  },
});

async function connect(agent, opts, config) {
  const session = new RealtimeSession(agent, { model: 'voxgate', ...(config ? { config } : {}) });
  const seen = record(session);
  await session.connect({ apiKey: opts.key, url: opts.base + '/v1/realtime/calls' });
  return { session, seen };
}

async function finish(session, seen) {
  seen.heard = await heard(session);
  seen.history = session.history.map((i) => ({ type: i.type, role: i.role, name: i.name, status: i.status }));
  seen.agent = session.currentAgent.name;
  session.close();
  return seen;
}

// asked by voice about the weather: the SDK runs the tool, the agent speaks from its result
window.toolScenario = async (opts) => {
  const seenBox = { toolCalls: [] };
  const agent = new RealtimeAgent({ name: 'Assistant', instructions: 'Be brief.', tools: [weather(seenBox)] });
  const { session, seen } = await connect(agent, opts);
  seen.toolCalls = seenBox.toolCalls;
  await until(() => seen.agentTranscripts.some((t) => t.includes('dry and windy')), 40000);
  await until(() => seen.events.includes('output_audio_buffer.stopped'), 15000);
  return finish(session, seen);
};

// "transfer me to the Spanish agent": the handoff is a tool; the SDK switches agents and the new one answers
window.handoffScenario = async (opts) => {
  const spanish = new RealtimeAgent({ name: 'Spanish Agent', instructions: 'Answer in Spanish.',
    handoffDescription: 'Speaks Spanish.' });
  const agent = new RealtimeAgent({ name: 'Assistant', instructions: 'Be brief.', handoffs: [spanish] });
  const { session, seen } = await connect(agent, opts);
  await until(() => seen.handoffs.length > 0, 40000);
  await until(() => seen.responses.length >= 2, 15000); // the call, then the new agent's answer
  return finish(session, seen);
};

// push-to-talk: turn detection off; clear when the button goes down, commit + response.create when it comes up
window.pushToTalkScenario = async (opts) => {
  const agent = new RealtimeAgent({ name: 'Assistant', instructions: 'Be brief.' });
  const { session, seen } = await connect(agent, opts, { audio: { input: { turnDetection: null } } });
  await until(() => seen.events.includes('session.updated'), 5000);
  session.transport.sendEvent({ type: 'input_audio_buffer.clear' }); // button down
  await sleep(opts.holdMs);
  session.transport.sendEvent({ type: 'input_audio_buffer.commit' }); // button up
  session.transport.sendEvent({ type: 'response.create' });
  await until(() => seen.responses.length > 0, 30000);
  await until(() => seen.events.includes('output_audio_buffer.stopped'), 15000);
  return finish(session, seen);
};

// an out-of-band text response beside the conversation: classification, with metadata, no speech
window.outOfBandScenario = async (opts) => {
  const agent = new RealtimeAgent({ name: 'Assistant', instructions: 'Be brief.' });
  const { session, seen } = await connect(agent, opts, { audio: { input: { turnDetection: null } } });
  await until(() => seen.events.includes('session.updated'), 5000);
  session.transport.sendEvent({
    type: 'response.create',
    response: {
      conversation: 'none', output_modalities: ['text'], metadata: { job: 'classify' },
      instructions: 'Say whether the user sounds happy.',
      input: [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'I love this!' }] }],
    },
  });
  await until(() => seen.responses.length > 0, 15000);
  return finish(session, seen);
};
