// dystream's page: the avatar's voice (a file) and the microphone (the partner) stream to the
// server; frames come back with the voice they belong to and are shown when that voice plays.
"use strict";

const $ = (id) => document.getElementById(id);
const state = window.dystream = {
  frames: 0, shown: 0, jaw: [], audioSamples: 0, errors: [], stats: null, ready: null, running: false,
};
let ws = null, ctx = null, micNode = null, micStream = null, voiceTimer = null, playhead = 0;
const pending = [];   // frames waiting for their audio to play: {bitmap, at}

function fail(message) {
  state.errors.push(message);
  $("error").textContent = message;
}

async function fileBase64(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

async function voiceSamples() {
  const file = $("voice").files[0];
  const data = file ? await file.arrayBuffer() : await (await fetch("assets/demo_self.wav")).arrayBuffer();
  const buffer = await ctx.decodeAudioData(data);
  return buffer.getChannelData(0);   // at the context's rate
}

function send(stream, samples) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const message = new Uint8Array(1 + samples.length * 4);
  message[0] = stream;
  message.set(new Uint8Array(samples.buffer, samples.byteOffset, samples.length * 4), 1);
  ws.send(message);
}

function streamVoice(samples) {
  // The voice leaves in real time, as it would be spoken: what the clock says has been said.
  const started = ctx.currentTime;
  let sent = 0;
  voiceTimer = setInterval(() => {
    const due = Math.min(samples.length, Math.floor((ctx.currentTime - started) * ctx.sampleRate));
    if (due > sent) { send(0, samples.slice(sent, due)); sent = due; }
    if (sent >= samples.length) { clearInterval(voiceTimer); voiceTimer = null; }
  }, 20);
}

async function startMicrophone() {
  micStream = await navigator.mediaDevices.getUserMedia(
    { audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 } });
  await ctx.audioWorklet.addModule("capture.js");
  micNode = new AudioWorkletNode(ctx, "capture");
  micNode.port.onmessage = (event) => send(1, event.data);
  ctx.createMediaStreamSource(micStream).connect(micNode);
}

function onFrame(data) {
  const view = new DataView(data);
  const length = view.getUint32(1);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 5, length)));
  const jpeg = new Blob([new Uint8Array(data, 5 + length, header.jpeg_bytes)], { type: "image/jpeg" });
  const pcm = new Int16Array(data.slice(5 + length + header.jpeg_bytes, 5 + length + header.jpeg_bytes + header.audio_bytes));
  state.frames += 1;
  state.audioSamples += pcm.length;
  if (header.motion) state.jaw.push(header.motion.jawOpen);
  // Its voice is scheduled right after the previous frame's; the picture is shown when it plays.
  const rate = state.ready.self_audio.sample_rate;
  const audio = ctx.createBuffer(1, pcm.length, rate);
  const channel = audio.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
  const source = ctx.createBufferSource();
  source.buffer = audio;
  source.connect(ctx.destination);
  const at = Math.max(playhead, ctx.currentTime + 0.06);
  source.start(at);
  playhead = at + pcm.length / rate;
  createImageBitmap(jpeg).then((bitmap) => pending.push({ bitmap, at, index: header.index }));
}

function draw() {
  if (!state.running) return;
  const canvas = $("view"), g = canvas.getContext("2d");
  let latest = null;
  while (pending.length && pending[0].at <= ctx.currentTime) latest = pending.shift();
  if (latest) { g.drawImage(latest.bitmap, 0, 0, canvas.width, canvas.height); state.shown += 1; }
  requestAnimationFrame(draw);
}

function showStats() {
  const s = state.stats;
  const lines = [`frames received ${state.frames}, shown ${state.shown}`];
  if (s) {
    const a = s.audio_to_frame_latency_ms, c = s.compute_latency_ms;
    lines.push(`audio-to-frame latency p50 ${a.p50} ms, p95 ${a.p95} ms (lookahead + compute)`);
    lines.push(`compute latency p50 ${c.p50} ms, p95 ${c.p95} ms`);
    lines.push(`dropped frames ${s.dropped_frames}, skipped ${s.skipped_frames}, late samples ${s.late_samples}`);
  }
  $("stats").textContent = lines.join("\n");
}

async function start() {
  $("start").disabled = true;
  $("error").textContent = "";
  try {
    ctx = new AudioContext();
    const voice = await voiceSamples();
    const photo = $("photo").files[0] ? await fileBase64($("photo").files[0]) : null;
    const format = { encoding: "float32", sample_rate: ctx.sampleRate, channels: 1 };
    const token = new URLSearchParams(location.search).get("token");
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/session` +
      (token ? `?token=${encodeURIComponent(token)}` : "");
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onmessage = async (event) => {
      if (typeof event.data !== "string") { onFrame(event.data); return; }
      const message = JSON.parse(event.data);
      if (message.type === "ready") {
        state.ready = message;
        state.running = true;
        if ($("mic").checked) await startMicrophone();
        streamVoice(voice);
        requestAnimationFrame(draw);
        $("stop").disabled = false;
        $("clear").disabled = false;
      } else if (message.type === "stats") {
        state.stats = message;
        showStats();
      } else if (message.type === "error") {
        fail(`${message.code}: ${message.message}`);
      }
    };
    ws.onclose = () => { stop(); };
    ws.onopen = () => ws.send(JSON.stringify({
      type: "open", version: 1, photo, seed: Number($("seed").value) || 0, motion: true,
      self_format: format, other_format: format,
    }));
  } catch (error) {
    fail(String(error));
    stop();
  }
}

function stop() {
  state.running = false;
  if (voiceTimer) clearInterval(voiceTimer);
  voiceTimer = null;
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  micStream = null;
  if (ws && ws.readyState === WebSocket.OPEN) ws.close();
  $("start").disabled = false;
  $("stop").disabled = true;
  $("clear").disabled = true;
}

$("start").onclick = start;
$("stop").onclick = stop;
$("clear").onclick = () => { if (ws) ws.send(JSON.stringify({ type: "clear" })); if (voiceTimer) clearInterval(voiceTimer); };
