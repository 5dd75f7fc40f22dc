// A spoken conversation with voxgate through the official Agents SDK in Node, over its WebSocket transport
// (OpenAIRealtimeWebSocket): only the URL is changed. Usage:
//   node ws_conversation.mjs WS_URL API_KEY QUESTION.pcm BARGE_IN.pcm [tool|plain]
// The .pcm files are PCM16 mono 24 kHz (voices the agent does not use). The script plays the role of a
// microphone (40 ms chunks in real time, silence between utterances), asks a question (mode "tool": one that needs
// the agent's weather tool, which the SDK runs), and talks over the spoken answer. Prints one JSON line.
import fs from 'node:fs';
import { RealtimeAgent, RealtimeSession, tool } from '@openai/agents-realtime';

const [url, apiKey, questionPath, bargePath, mode = 'tool'] = process.argv.slice(2);
const question = fs.readFileSync(questionPath);
const bargeIn = fs.readFileSync(bargePath);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = {
  tool_calls: [], user_transcripts: [], assistant_transcripts: [], audio_bytes: 0, answer_audio_bytes: 0,
  interrupted: 0, truncated: [], errors: [], event_types: [],
};

const getWeather = tool({
  name: 'get_weather',
  description: 'The weather in a city.',
  parameters: {
    type: 'object', properties: { location: { type: 'string' } }, required: ['location'], additionalProperties: false,
  },
  strict: true,
  execute: async ({ location }) => {
    out.tool_calls.push(location);
    return JSON.stringify({ forecast: 'clear skies', temperature: '18 degrees' });
  },
});
const agent = new RealtimeAgent({
  name: 'Assistant', instructions: 'Answer briefly.', tools: mode === 'tool' ? [getWeather] : [],
});
const session = new RealtimeSession(agent, { transport: 'websocket', model: 'voxgate' });

let answerAudioAt = null;
session.on('audio', (e) => {
  out.audio_bytes += e.data.byteLength;
  if (out.tool_calls.length || mode !== 'tool') {
    out.answer_audio_bytes += e.data.byteLength;
    answerAudioAt ??= Date.now();
  }
});
session.on('audio_interrupted', () => { out.interrupted += 1; });
session.on('error', (e) => { out.errors.push(String(e?.error?.message ?? e?.error ?? e)); });
session.on('transport_event', (ev) => {
  if (ev.type !== 'response.output_audio.delta') out.event_types.push(ev.type);
  if (ev.type === 'conversation.item.input_audio_transcription.completed') out.user_transcripts.push(ev.transcript);
  if (ev.type === 'response.output_audio_transcript.done') out.assistant_transcripts.push(ev.transcript);
  if (ev.type === 'conversation.item.truncated') out.truncated.push(ev.audio_end_ms);
});

// the microphone: queued speech, else silence, every 40 ms
const STEP = 24000 * 2 * 40 / 1000;
let pending = Buffer.alloc(0);
let micOn = true;
async function microphone() {
  const start = Date.now();
  for (let n = 1; micOn; n++) {
    let chunk;
    if (pending.length) {
      chunk = pending.subarray(0, STEP);
      pending = pending.subarray(STEP);
    } else {
      chunk = Buffer.alloc(STEP);
    }
    const copy = Uint8Array.from(chunk);
    session.sendAudio(copy.buffer);
    await sleep(Math.max(0, start + n * 40 - Date.now()));
  }
}
async function until(pred, ms) {
  const end = Date.now() + ms;
  while (!pred() && Date.now() < end) await sleep(20);
  return pred();
}

await session.connect({ apiKey, url });
const mic = microphone();
pending = Buffer.concat([pending, question]);
out.answer_started = await until(() => answerAudioAt !== null, 30000);
if (out.answer_started) {
  await sleep(400); // talk over the answer while it is still playing
  pending = Buffer.concat([pending, bargeIn]);
  await until(() => out.truncated.length > 0, 10000);
  await until(() => out.user_transcripts.length >= 2, 10000);
}
micOn = false;
await mic;
out.history = session.history.map((i) => ({ type: i.type, role: i.role, status: i.status, name: i.name }));
session.close();
console.log(JSON.stringify(out));
process.exit(0);
