// A live job through the npm phoenix client, unchanged: start it on video:lobby, steer it when its
// first chunk arrives, stop it after `steered`; run by tests/test_live.py:  node live.mjs BASE_URL OUT_DIR
import { writeFileSync } from "node:fs";
import { Socket } from "phoenix";
import WebSocket from "ws";
import { recorder } from "./recorder.mjs";

const [base, outDir] = process.argv.slice(2);
class OriginWebSocket extends WebSocket {
  constructor(url, protocols) { super(url, protocols, { origin: base }); }
}
const socket = new Socket(base.replace(/^http/, "ws") + "/socket", { transport: OriginWebSocket });
socket.connect();
const lobby = socket.channel("video:lobby");
await new Promise((resolve, reject) => lobby.join().receive("ok", resolve).receive("error", reject));
const events = recorder(lobby);
const push = (event, payload) => new Promise((resolve) => {
  lobby.push(event, payload, 60000).receive("ok", (r) => resolve({ status: "ok", response: r }))
    .receive("error", (r) => resolve({ status: "error", response: r }));
});

const result = {};
const started = await push("generate", { prompt: "a red circle moving right", live: true, width: 64, height: 64,
                                     num_frames: 8, steps: 4 });
result.start = started;
const jobId = started.response.job_id;
const done = events.next("generation_complete", jobId);
await events.next("video_chunk", jobId);
result.steer = await push("steer", { job_id: jobId, prompt: "a red circle moving up" });
result.steered = await events.next("steered", jobId);
result.stop = await push("stop", { job_id: jobId });
const complete = await done;
result.complete = { num_frames: complete.num_frames, timeline: complete.timeline };
writeFileSync(`${outDir}/live.mp4`, Buffer.from(complete.video, "base64"));
writeFileSync(`${outDir}/result.json`, JSON.stringify(result));
socket.disconnect();
process.exit(0);
