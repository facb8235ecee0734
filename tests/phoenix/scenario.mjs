// The reference design's client, unchanged (npm phoenix 1.8.16), against the service's
// /socket/websocket; run by tests/test_phoenix.py:  node scenario.mjs BASE_URL OUT_DIR [TOKEN]
// Writes what it observed as JSON to OUT_DIR/result.json (and each received video as an .mp4).
import { writeFileSync } from "node:fs";
import { Socket } from "phoenix";
import WebSocket from "ws";
import { recorder } from "./recorder.mjs";

const [base, outDir, token] = process.argv.slice(2);
const origin = base;
const endpoint = base.replace(/^http/, "ws") + "/socket";

// node has no browser WebSocket: the `ws` package, sending the Origin a browser would send
class OriginWebSocket extends WebSocket {
  constructor(url, protocols) { super(url, protocols, { origin }); }
}

function connect(params = {}, opts = {}) {
  return new Promise((resolve, reject) => {
    const socket = new Socket(endpoint, { transport: OriginWebSocket, params, heartbeatIntervalMs: 400, ...opts });
    const timer = setTimeout(() => reject(new Error("no connection")), 10000);
    socket.onOpen(() => { clearTimeout(timer); resolve(socket); });
    socket.connect();
  });
}

function join(channel) {
  return new Promise((resolve, reject) => {
    channel.join().receive("ok", resolve).receive("error", reject).receive("timeout", () => reject(new Error("timeout")));
  });
}

function push(channel, event, payload) {
  return new Promise((resolve) => {
    channel.push(event, payload, 60000).receive("ok", (r) => resolve({ status: "ok", response: r }))
      .receive("error", (r) => resolve({ status: "error", response: r }))
      .receive("timeout", () => resolve({ status: "timeout" }));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const small = { num_frames: 8, width: 64, height: 64, steps: 2 };
const result = {};

// two sockets join the lobby; one pushes `generate` with the reference's {prompt, num_frames}
const a = await connect(token ? { token } : {});
const b = await connect(token ? { token } : {});
const lobbyA = a.channel("video:lobby");
const lobbyB = b.channel("video:lobby");
await join(lobbyA);
await join(lobbyB);
const eventsA = recorder(lobbyA), eventsB = recorder(lobbyB);
const reply = await push(lobbyA, "generate", { prompt: "a red circle moving to the right", ...small });
result.generate_reply = reply;
const jobId = reply.response.job_id;
const [doneA, doneB] = await Promise.all([eventsA.next("generation_complete", jobId),
                                          eventsB.next("generation_complete", jobId)]);
writeFileSync(`${outDir}/a.mp4`, Buffer.from(doneA.video, "base64"));
writeFileSync(`${outDir}/b.mp4`, Buffer.from(doneB.video, "base64"));
result.complete = { prompt: doneA.prompt, same_video: doneA.video === doneB.video, num_frames: doneA.num_frames,
                    kinds_a: eventsA.kinds(jobId) };

// a bad push: our error code in the reply
result.bad_reply = await push(lobbyA, "generate", { prompt: "", ...small });
result.unknown_reply = await push(lobbyA, "dance", {});

// heartbeats keep the sockets open over several intervals (400 ms here)
let heartbeats = 0;
a.onMessage((msg) => { if (msg.topic === "phoenix" && msg.event === "phx_reply") heartbeats += 1; });
await sleep(2500);
result.heartbeats = { replies: heartbeats, connected: a.isConnected() && b.isConnected() };

// job:<id> gets only that job's events; after leave, the lobby sends b nothing more
const c = await connect(token ? { token } : {});
const second = await push(lobbyA, "generate", { prompt: "a blue square moving up", ...small, steps: 3 });
const jobTopic = c.channel(`job:${second.response.job_id}`);
const onJob = [];
jobTopic.onMessage = (event, payload) => { if (payload && payload.job_id) onJob.push([event, payload.job_id]); return payload; };
await join(jobTopic);
await new Promise((resolve) => lobbyB.leave().receive("ok", resolve));
const afterLeave = [];
lobbyB.onMessage = (event, payload) => { afterLeave.push(event); return payload; };
const third = await push(lobbyA, "generate", { prompt: "a green triangle moving left", ...small });
await eventsA.next("generation_complete", third.response.job_id);
for (let i = 0; i < 200 && !onJob.some(([e, id]) => e === "generation_complete" && id === second.response.job_id); i++) {
  await sleep(100);
}
await sleep(500);
result.job_topic = { events: [...new Set(onJob.map(([e]) => e))], job_ids: [...new Set(onJob.map(([, id]) => id))],
                     expected: second.response.job_id, other: third.response.job_id };
result.after_leave = afterLeave.filter((e) => !e.startsWith("phx_") && !e.startsWith("chan_reply"));
result.join_missing = await new Promise((resolve) => {
  c.channel("job:00000000-0000-0000-0000-000000000000").join().receive("error", (r) => resolve(r))
    .receive("ok", () => resolve("joined"));
});

// a wrong token is refused: the socket never opens
result.wrong_token = await new Promise((resolve) => {
  const s = new Socket(endpoint, { transport: OriginWebSocket, params: { token: "vs_wrong" }, reconnectAfterMs: () => 60000 });
  s.onOpen(() => { resolve("opened"); s.disconnect(); });
  s.onError(() => { resolve("refused"); s.disconnect(); });
  s.connect();
});

writeFileSync(`${outDir}/result.json`, JSON.stringify(result, null, 1));
for (const s of [a, b, c]) s.disconnect();
process.exit(0);
