/* Web UI for the video generation service: vanilla JS, no build step.
 *
 * Talks to the websocket lobby (/ws/lobby/, protocol in docs/protocol.md) for submitting, live
 * progress and completions, and to the HTTP API for models, history and fallbacks.
 */
(function () {
  "use strict";

  const $ = (sel, root) => (root || document).querySelector(sel);
  const TERMINAL = new Set(["succeeded", "failed", "cancelled", "error"]);
  const MAX_BACKOFF_MS = 10000;
  const PING_EVERY_MS = 25000;
  const LIVE_TICK_MS = 250;         // how often a live card's buffered seconds and timeline marker update
  const LIVE_CATCHUP_S = 6;         // a live player this far behind what it has buffered jumps to the live edge
  const LIVE_KEEP_PLAYED_S = 20;    // seconds already played that a live player keeps buffered (seek back)
  const STAFF = document.body.dataset.staff === "1";  // the queue controls (the API refuses others anyway)
  // ?protocol=phoenix: speak the reference design's Phoenix Channels protocol instead of /ws/lobby/
  const PHOENIX = new URLSearchParams(location.search).get("protocol") === "phoenix";

  const els = {
    conn: $("#conn-status"),
    connText: $("#conn-status .conn-text"),
    flash: $("#flash"),
    form: $("#generate-form"),
    prompt: $("#prompt"),
    model: $("#model"),
    modelHint: $("#model-hint"),
    frames: $("#num_frames"),
    width: $("#width"),
    height: $("#height"),
    steps: $("#steps"),
    guidance: $("#guidance_scale"),
    seed: $("#seed"),
    fps: $("#fps"),
    image: $("#image"),
    imageClear: $("#image-clear"),
    imagePreview: $("#image-preview"),
    private: $("#private"),
    live: $("#live"),
    liveHint: $("#live-hint"),
    maxDuration: $("#max_duration_s"),
    framesLabel: $("#frames-label"),
    evaluate: $("#evaluate"),
    longVideo: $("#long-video"),
    numChunks: $("#num_chunks"),
    duration: $("#duration_s"),
    overlap: $("#overlap"),
    interpolate: $("#interpolate"),
    upscale: $("#upscale"),
    submit: $("#submit"),
    queue: $("#queue"),
    queueEmpty: $("#queue-empty"),
    queueClear: $("#queue-clear"),
    gallery: $("#gallery"),
    galleryEmpty: $("#gallery-empty"),
    galleryRefresh: $("#gallery-refresh"),
    template: $("#job-template"),
  };

  const state = {
    ws: null,
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    models: {},
    imageB64: null,
    jobs: new Map(),      // job_id -> card element
    pending: new Map(),   // request_id -> card element (sent, not yet queued)
    cancels: new Map(),   // request_id of a cancel -> card element (until refused or done)
    stops: new Map(),     // request_id of a live job's stop -> card element (until refused or done)
    objectUrls: new Map(), // card -> blob URL (revoked when the card goes)
    previewUrls: new Map(), // card -> blob URL of the latest preview clip
    streams: new Map(), // card -> the MediaSource playing its video_chunk stream
    describing: new Map(), // request_id, then job_id, of a describe job -> the card of the video it describes
    steers: new Map(),   // request_id of a steer -> {card, prompt, sentAt} (until `steered` shows it)
    timelines: new Map(), // live card -> [{from_frame, prompt}]
  };

  // ---------------------------------------------------------------- helpers

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input && input.value) return input.value;
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  async function api(method, url, body) {
    const opts = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRFToken"] = csrfToken();
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(url, opts);
    let data = null;
    try { data = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) {
      const detail = data && typeof data.error === "object" && data.error ? data.error : data;
      const msg = (detail && (detail.message || detail.error || detail.detail)) || resp.status + " " + resp.statusText;
      const err = new Error(typeof msg === "string" ? msg : JSON.stringify(msg));
      err.data = data;
      throw err;
    }
    return data;
  }

  function listFrom(data, key) {
    if (Array.isArray(data)) return data;
    if (data && Array.isArray(data[key])) return data[key];
    if (data && Array.isArray(data.results)) return data.results;
    return [];
  }

  let flashTimer = null;
  function flash(message, kind) {
    els.flash.textContent = message;
    els.flash.className = "flash" + (kind === "info" ? " info" : "");
    els.flash.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { els.flash.hidden = true; }, 8000);
  }

  function newRequestId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "r" + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  /** A preview may arrive as a data: URL or as bare base64; sniff the image type from the bytes. */
  function imageSrc(preview, mimeHint) {
    if (!preview || typeof preview !== "string") return null;
    if (preview.startsWith("data:")) return preview;
    let mime = mimeHint || "image/jpeg";
    if (preview.startsWith("UklGR")) mime = "image/webp";
    else if (preview.startsWith("iVBOR")) mime = "image/png";
    else if (preview.startsWith("R0lGOD")) mime = "image/gif";
    return "data:" + mime + ";base64," + preview;
  }

  function base64ToBlob(b64, mime) {
    const comma = b64.indexOf(",");
    if (b64.startsWith("data:") && comma > 0) {
      mime = b64.slice(5, b64.indexOf(";")) || mime;
      b64 = b64.slice(comma + 1);
    }
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Blob([bytes], { type: mime || "video/mp4" });
  }

  function formatEta(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
    const s = Math.max(0, Math.round(seconds));
    if (s < 1) return "ETA <1 s";
    if (s < 60) return "ETA " + s + " s";
    return "ETA " + Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
  }

  function describeParams(p) {
    if (!p) return "";
    const bits = [];
    if (p.model) bits.push(p.model);
    if (p.width && p.height) bits.push(p.width + "\u00d7" + p.height);
    if (p.live) bits.push("live" + (p.max_duration_s ? " \u2264 " + p.max_duration_s + " s" : ""));
    if (p.num_frames) bits.push(p.num_frames + (p.live ? "-frame chunks" : " frames"));
    if (p.steps) bits.push(p.steps + " steps");
    if (p.num_chunks > 1) bits.push(p.num_chunks + " chunks");
    if (p.duration_s) bits.push(p.duration_s + " s");
    if (p.interpolate > 1) bits.push("interpolate \u00d7" + p.interpolate);
    if (p.upscale > 1) bits.push("upscale \u00d7" + p.upscale);
    if (p.seed !== undefined && p.seed !== null && p.seed !== "") bits.push("seed " + p.seed);
    if (p.private) bits.push("private");
    return bits.join(" \u00b7 ");
  }

  function numOrNull(input) {
    const v = input.value.trim();
    if (v === "") return null;
    const n = Number(v);
    return Number.isFinite(n) ? n : null;
  }

  // ---------------------------------------------------------------- models

  async function loadModels() {
    try {
      const models = listFrom(await api("GET", "/api/models"), "models");
      els.model.innerHTML = "";
      for (const m of models) {
        state.models[m.name] = m;
        const opt = document.createElement("option");
        opt.value = m.name;
        opt.textContent = m.name;
        opt.title = m.description || "";
        els.model.appendChild(opt);
      }
      if (!models.length) els.model.innerHTML = '<option value="">no models</option>';
      applyModel(true);
    } catch (e) {
      els.model.innerHTML = '<option value="">(default)</option>';
      flash("Could not load models: " + e.message);
    }
  }

  function setBounds(input, min, max, step) {
    if (min !== undefined && min !== null) input.min = min;
    if (max !== undefined && max !== null) input.max = max;
    if (step !== undefined && step !== null) input.step = step;
  }

  function applyModel(setDefaults) {
    const m = state.models[els.model.value];
    if (!m) return;
    setBounds(els.frames, m.min_frames, m.max_frames, m.frame_multiple || 1);
    for (const input of [els.width, els.height]) setBounds(input, m.min_size, m.max_size, m.size_multiple);
    setBounds(els.steps, 1, m.max_steps, 1);
    setBounds(els.guidance, 0, m.max_guidance, null);
    if (setDefaults) {
      if (m.default_frames) els.frames.value = m.default_frames;
      if (m.default_width) els.width.value = m.default_width;
      if (m.default_height) els.height.value = m.default_height;
      if (m.default_steps) els.steps.value = m.default_steps;
      if (m.default_guidance !== undefined) els.guidance.value = m.default_guidance;
      if (m.default_fps) els.fps.value = m.default_fps;
    }
    const hint = [];
    if (m.description) hint.push(m.description);
    if (m.frame_rule) hint.push("frames: " + m.frame_rule);
    if (m.size_multiple) hint.push("size: multiple of " + m.size_multiple + ", " + m.min_size + "\u2013" + m.max_size);
    els.modelHint.textContent = hint.join(" \u2022 ");
    const supportsImage = m.supports_image !== false;
    els.image.disabled = !supportsImage;
    els.image.closest(".image-field").classList.toggle("disabled", !supportsImage);
    if (!supportsImage) clearImage();
  }

  // ---------------------------------------------------------------- start image

  function clearImage() {
    state.imageB64 = null;
    els.image.value = "";
    els.imagePreview.hidden = true;
    els.imagePreview.removeAttribute("src");
    els.imageClear.hidden = true;
  }

  function readImage() {
    const file = els.image.files && els.image.files[0];
    if (!file) { clearImage(); return; }
    if (!/^image\/(png|jpeg)$/.test(file.type)) {
      flash("The start image must be a PNG or JPEG.");
      clearImage();
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      const dataUrl = String(reader.result);
      state.imageB64 = dataUrl.slice(dataUrl.indexOf(",") + 1);
      els.imagePreview.src = dataUrl;
      els.imagePreview.hidden = false;
      els.imageClear.hidden = false;
    };
    reader.onerror = () => { flash("Could not read the image file."); clearImage(); };
    reader.readAsDataURL(file);
  }

  // ---------------------------------------------------------------- job cards

  function refreshEmpty() {
    els.queueEmpty.hidden = els.queue.children.length > 0;
  }

  function createCard(info) {
    const card = els.template.content.firstElementChild.cloneNode(true);
    $(".job-prompt-text", card).textContent = info.prompt || "(someone else\u2019s job)";
    $(".job-meta", card).textContent = describeParams(info.params || info);
    $(".job-cancel", card).addEventListener("click", () => cancelJob(card));
    $(".job-stop", card).addEventListener("click", () => stopLive(card));
    $(".job-retry", card).addEventListener("click", () => retryJob(card));
    $(".job-front", card).addEventListener("click", () => frontJob(card));
    $(".job-describe", card).addEventListener("click", () => describeJob(card, false));
    $(".job-remix", card).addEventListener("click", () => describeJob(card, true));
    els.queue.prepend(card);
    refreshEmpty();
    return card;
  }

  function bindJob(card, jobId) {
    card.dataset.jobId = jobId;
    state.jobs.set(jobId, card);
  }

  function cardFor(jobId, info) {
    let card = state.jobs.get(jobId);
    if (!card) {
      card = createCard(info || {});
      bindJob(card, jobId);
      if (!info || !info.prompt) fillFromServer(card, jobId);
    }
    return card;
  }

  async function fillFromServer(card, jobId) {
    try {
      const job = await api("GET", "/api/jobs/" + encodeURIComponent(jobId));
      const j = job && job.job ? job.job : job;
      if (!j) return;
      if (j.prompt) $(".job-prompt-text", card).textContent = j.prompt;
      const params = Object.assign({}, j.params || {}, { model: j.model || (j.params || {}).model });
      $(".job-meta", card).textContent = describeParams(params);
      markLive(card, j);
    } catch (e) { /* the job may be private or gone; keep the placeholder */ }
  }

  function setStatus(card, status, label) {
    card.dataset.status = status;
    $(".job-status", card).textContent = label || status;
    const done = TERMINAL.has(status);
    $(".job-cancel", card).hidden = done;
    $(".job-retry", card).hidden = !(status === "failed" || status === "cancelled");
    $(".job-front", card).hidden = !(STAFF && status === "queued");
    $(".job-understanding", card).hidden = status !== "succeeded";
    if (done) $(".job-eta", card).textContent = "";
    if (card.dataset.live === "1") refreshLive(card);
  }

  function setProgress(card, percent) {
    const p = Math.max(0, Math.min(100, Number(percent) || 0));
    const bar = $(".progress-bar", card);
    bar.style.width = p + "%";
    bar.setAttribute("aria-valuenow", String(Math.round(p)));
  }

  function setError(card, message) {
    const el = $(".job-error", card);
    el.textContent = message;
    el.hidden = !message;
  }

  function makeVideo(src) {
    const video = document.createElement("video");
    video.controls = true;
    video.autoplay = true;
    video.loop = true;
    video.muted = true;
    video.playsInline = true;
    video.setAttribute("muted", "");
    video.setAttribute("playsinline", "");
    video.preload = "auto";
    video.src = src;
    return video;
  }

  /** A progress preview: a tiny MP4 of every frame of the current estimate (a still for older servers). */
  function showPreview(card, msg) {
    if (!msg.preview || card.querySelector(".job-stream:not([hidden])")) return;  // the stream shows more
    const ph = card.querySelector(".job-placeholder");
    if (msg.preview_mime === "video/mp4") {
      const clip = card.querySelector(".job-preview-clip");
      if (!clip) return;
      const old = state.previewUrls.get(card);
      const url = URL.createObjectURL(base64ToBlob(msg.preview, "video/mp4"));
      state.previewUrls.set(card, url);
      clip.src = url;
      clip.hidden = false;
      const play = clip.play();
      if (play && play.catch) play.catch(() => {});
      if (old) URL.revokeObjectURL(old);
      $(".job-preview", card).hidden = true;
    } else {
      const img = card.querySelector(".job-preview");
      img.src = imageSrc(msg.preview, msg.preview_mime);
      img.hidden = false;
    }
    if (ph) ph.remove();
  }

  /** video_chunk: the video as it is generated, played through Media Source Extensions (the init
   * segment with seq 0, then the fragments in order); generation_complete swaps in the final MP4.
   * A live video joined after its start (no seq 0 here) is read from GET /api/jobs/<id>/stream
   * instead, which serves the whole stream from its first byte while it grows. */
  function appendStream(card, msg) {
    let s = state.streams.get(card);
    if (!s) {
      if (msg.seq !== 0) {
        if (card.dataset.live === "1" && card.dataset.jobId) followStream(card, card.dataset.jobId, msg.mime);
        return;  // otherwise a gap (joined late, or a lost event): wait for the final video
      }
      s = openStream(card, msg.mime);
      if (!s) return;
    }
    if (s.http) return;  // the HTTP stream brings the same bytes
    if (msg.seq !== s.next) return;
    s.next += 1;
    if (msg.init) s.queue.push(base64ToBytes(msg.init));
    s.queue.push(base64ToBytes(msg.data));
    card.dataset.streamed = String((Number(card.dataset.streamed) || 0) + msg.num_frames);
    pumpStream(s);
  }

  /** A MediaSource on the card's stream <video>; null where the browser cannot play `mime`. */
  function openStream(card, mime) {
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) return null;
    const video = card.querySelector(".job-stream");
    if (!video) return null;
    const source = new MediaSource();
    const s = { source, buffer: null, queue: [], next: 0, url: URL.createObjectURL(source), video, http: false };
    state.streams.set(card, s);
    source.addEventListener("sourceopen", () => {
      s.buffer = source.addSourceBuffer(mime);
      s.buffer.mode = "sequence";
      s.buffer.addEventListener("updateend", () => pumpStream(s));
      pumpStream(s);
    }, { once: true });
    video.src = s.url;
    video.hidden = false;
    for (const el of card.querySelectorAll(".job-preview, .job-preview-clip, .job-placeholder")) el.hidden = true;
    return s;
  }

  async function followStream(card, jobId, mime) {
    const s = openStream(card, mime);
    if (!s) return;
    s.http = true;
    s.abort = new AbortController();
    try {
      const resp = await fetch("/api/jobs/" + encodeURIComponent(jobId) + "/stream",
                               { credentials: "same-origin", signal: s.abort.signal });
      if (!resp.ok || !resp.body) return;
      const reader = resp.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        s.queue.push(value);
        pumpStream(s);
      }
    } catch (e) { /* aborted by the final video, or the connection went: the final video still comes */ }
  }

  function pumpStream(s) {
    if (!s.buffer || s.buffer.updating) return;
    try {
      if (s.queue.length) {
        s.buffer.appendBuffer(s.queue.shift());
        const play = s.video.play();
        if (play && play.catch) play.catch(() => {});
        return;
      }
      // an endless video: drop what was played long ago, or the browser's buffer quota runs out
      const buffered = s.buffer.buffered, played = s.video.currentTime;
      if (buffered.length && played - buffered.start(0) > 2 * LIVE_KEEP_PLAYED_S) {
        s.buffer.remove(buffered.start(0), played - LIVE_KEEP_PLAYED_S);
      }
    } catch (e) { /* quota or a closed source: the final video still comes */ }
  }

  function endStream(card) {
    const s = state.streams.get(card);
    if (!s) return;
    state.streams.delete(card);
    if (s.abort) s.abort.abort();
    URL.revokeObjectURL(s.url);
  }

  function base64ToBytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function showVideo(card, msg) {
    let src = null;
    if (msg.video) {
      try {
        src = URL.createObjectURL(base64ToBlob(msg.video, msg.mime || "video/mp4"));
        state.objectUrls.set(card, src);
      } catch (e) { src = null; }
    }
    if (!src && msg.url) src = msg.url;
    if (!src) return;
    endStream(card);
    const preview = state.previewUrls.get(card);
    if (preview) { URL.revokeObjectURL(preview); state.previewUrls.delete(card); }
    const media = $(".job-media", card);
    media.innerHTML = "";
    const video = makeVideo(src);
    video.dataset.testid = "job-video";
    video.setAttribute("data-testid", "job-video");
    if (msg.has_audio) {  // a model that makes sound: unmuted, so its controls play the track
      video.muted = false;
      video.removeAttribute("muted");
      video.dataset.audio = "1";
      card.dataset.audio = "1";
    }
    media.appendChild(video);
    const play = video.play();
    if (play && play.catch) {
      play.catch(() => {  // autoplay with sound refused until the user acts: play muted, controls unmute
        if (!video.muted) { video.muted = true; video.play().catch(() => {}); }
      });
    }
    if (msg.url) {
      const link = $(".job-link", card);
      link.href = msg.url;
      link.hidden = false;
    }
    if (msg.hdr_url) {  // an HDR model's master: a download (browsers play the SDR MP4 above)
      const hdr = $(".job-hdr-link", card);
      hdr.href = msg.hdr_url;
      hdr.hidden = false;
    }
  }

  function removeCard(card) {
    const url = state.objectUrls.get(card);
    if (url) { URL.revokeObjectURL(url); state.objectUrls.delete(card); }
    const preview = state.previewUrls.get(card);
    if (preview) { URL.revokeObjectURL(preview); state.previewUrls.delete(card); }
    endStream(card);
    state.timelines.delete(card);
    if (card.dataset.jobId) state.jobs.delete(card.dataset.jobId);
    if (card.dataset.requestId) state.pending.delete(card.dataset.requestId);
    card.remove();
    refreshEmpty();
  }

  async function cancelJob(card) {
    const jobId = card.dataset.jobId;
    if (!jobId) { flash("The job has not been queued yet.", "info"); return; }
    $(".job-cancel", card).disabled = true;
    setStatus(card, card.dataset.status, "cancelling");
    const requestId = newRequestId();
    state.cancels.set(requestId, card);
    if (!send({ type: "cancel", job_id: jobId, request_id: requestId })) {
      state.cancels.delete(requestId);
      try {
        await api("POST", "/api/jobs/" + encodeURIComponent(jobId) + "/cancel", {});
      } catch (e) {
        flash("Cancel failed: " + e.message);
        $(".job-cancel", card).disabled = false;
        setStatus(card, card.dataset.status);
      }
    }
  }


  // ---------------------------------------------------------------- live videos

  /** A live job's card (`info`: an event with `params`, a job record, or the request): the LIVE
   * badge, its real-time factor, buffered seconds and steer latency, Stop for its owner, and the
   * prompt timeline. */
  function markLive(card, info) {
    const params = (info && info.params) || {};
    if (!info || !(params.live || info.live)) return;
    if (card.dataset.live !== "1") {
      card.dataset.live = "1";
      card.classList.add("live");
      $(".job-live", card).hidden = false;
      $(".progress", card).hidden = true;  // endless: no total to show progress against
      const timeline = info.timeline || (info.prompt ? [{ from_frame: 0, prompt: info.prompt }] : []);
      setTimeline(card, timeline);
    }
    const fps = params.fps || info.fps;
    if (fps) {
      card.dataset.fps = String(fps);
      renderTimeline(card);
    }
    if (info.mine) card.dataset.mine = "1";
    refreshLive(card);
  }

  function refreshLive(card) {
    const running = !TERMINAL.has(card.dataset.status);
    const mine = card.dataset.mine === "1";
    $(".live-badge", card).hidden = !running;
    $(".job-stop", card).hidden = !(running && mine);
    $(".job-cancel", card).hidden = !(running && mine);  // someone else's live video is theirs to end
    if (!running) {
      $(".live-steering", card).textContent = "";
      $("[data-testid=live-buffered]", card).textContent = "\u2013";
    }
    refreshLiveForm();
  }

  /** This page's own live video that is still queued or running (the newest), or null. */
  function activeLive() {
    for (const card of els.queue.children) {
      if (card.dataset.live === "1" && card.dataset.mine === "1" && !TERMINAL.has(card.dataset.status)) return card;
    }
    return null;
  }

  /** The form in Live mode: no clip-only options, a duration cap, and Steer while a live video of
   * yours plays. */
  function refreshLiveForm() {
    const live = els.live.checked;
    for (const el of els.form.querySelectorAll(".clip-only")) el.hidden = live;
    for (const el of els.form.querySelectorAll(".live-only")) el.hidden = !live;
    els.framesLabel.textContent = live ? "Frames per chunk" : "Frames";
    const session = live ? activeLive() : null;
    els.submit.textContent = session ? "Steer" : live ? "Start live" : "Generate";
    els.form.dataset.mode = session ? "steer" : live ? "live" : "clip";
    els.liveHint.hidden = !live;
    els.liveHint.textContent = session
      ? "Your live video is playing: edit the prompt and press Enter to steer it (from its next chunk)."
      : "Enter starts it; then edit the prompt and press Enter again to steer it.";
  }

  async function steerLive(card, prompt) {
    const jobId = card.dataset.jobId;
    if (!jobId) { flash("The live video has not been queued yet.", "info"); return; }
    const requestId = newRequestId();
    state.steers.set(requestId, { card, prompt, sentAt: performance.now() });
    $(".live-steering", card).textContent = "steering to \u201c" + prompt + "\u201d\u2026";
    if (send({ type: "steer", job_id: jobId, prompt, request_id: requestId })) return;
    try {
      await api("POST", "/api/jobs/" + encodeURIComponent(jobId) + "/steer", { prompt });
    } catch (e) {
      state.steers.delete(requestId);
      $(".live-steering", card).textContent = "";
      flash("steer: " + e.message);
    }
  }

  /** Seconds from sending the newest steer to `prompt` to its `steered` (null: not steered from here). */
  function steerLatency(card, prompt) {
    let newest = null;
    for (const pending of state.steers.values()) {
      if (pending.card === card && pending.prompt === prompt && (!newest || pending.sentAt > newest.sentAt)) newest = pending;
    }
    if (!newest) return null;
    for (const [rid, pending] of state.steers) {  // older steers were overtaken by this one
      if (pending.card === card && pending.sentAt <= newest.sentAt) state.steers.delete(rid);
    }
    return (performance.now() - newest.sentAt) / 1000;
  }

  async function stopLive(card) {
    const jobId = card.dataset.jobId;
    if (!jobId) return;
    $(".job-stop", card).disabled = true;
    const requestId = newRequestId();
    state.stops.set(requestId, card);
    if (send({ type: "stop", job_id: jobId, request_id: requestId })) return;
    state.stops.delete(requestId);
    try {
      await api("POST", "/api/jobs/" + encodeURIComponent(jobId) + "/stop", {});
      $(".job-status", card).textContent = "stopping";
    } catch (e) {
      flash("stop: " + e.message);
      $(".job-stop", card).disabled = false;
    }
  }

  function setTimeline(card, entries) {
    state.timelines.set(card, entries.slice());
    renderTimeline(card);
  }

  function addTimelineEntry(card, entry) {
    const entries = (state.timelines.get(card) || []).filter((e) => e.from_frame < entry.from_frame);
    entries.push(entry);
    setTimeline(card, entries);
  }

  function clock(seconds) {
    const tenths = Math.round(seconds * 10);
    return Math.floor(tenths / 600) + ":" + String(Math.floor(tenths / 10) % 60).padStart(2, "0") + "." + (tenths % 10);
  }

  function renderTimeline(card) {
    const list = $(".timeline", card);
    const fps = Number(card.dataset.fps) || 0;
    list.innerHTML = "";
    for (const entry of state.timelines.get(card) || []) {
      const item = document.createElement("li");
      item.dataset.fromFrame = String(entry.from_frame);
      item.setAttribute("data-testid", "timeline-entry");
      const at = document.createElement("time");
      at.textContent = fps ? clock(entry.from_frame / fps) : "#" + entry.from_frame;
      at.title = "from frame " + entry.from_frame;
      const text = document.createElement("span");
      text.textContent = entry.prompt;
      item.append(at, text);
      list.appendChild(item);
    }
    markTimeline(card);
  }

  /** Highlight the timeline entry of the frame on screen. */
  function markTimeline(card) {
    const video = card.querySelector(".job-stream:not([hidden]), [data-testid=job-video]");
    const fps = Number(card.dataset.fps) || 0;
    const frame = video && fps ? Math.floor(video.currentTime * fps + 1e-3) : -1;
    let current = null;
    for (const item of $(".timeline", card).children) {
      item.classList.remove("current");
      if (Number(item.dataset.fromFrame) <= frame) current = item;
    }
    if (current) current.classList.add("current");
  }

  /** Buffered seconds of each playing live stream (what the player holds beyond the frame on
   * screen); a playing player left far behind (a background tab, a slow machine) jumps to the live
   * edge. */
  function liveTick() {
    for (const card of els.queue.querySelectorAll('.job[data-live="1"]')) {
      markTimeline(card);
      const s = state.streams.get(card);
      if (!s || TERMINAL.has(card.dataset.status)) continue;
      const buffered = s.video.buffered;
      if (!buffered.length) continue;
      const end = buffered.end(buffered.length - 1);
      if (!s.video.paused && end - s.video.currentTime > LIVE_CATCHUP_S) {  // (paused: the user looks at a frame)
        s.video.currentTime = end - 1;
        card.dataset.caughtUp = String((Number(card.dataset.caughtUp) || 0) + 1);
      }
      const ahead = Math.max(0, end - s.video.currentTime);
      card.dataset.buffered = ahead.toFixed(2);
      const cell = $("[data-testid=live-buffered]", card);
      cell.textContent = ahead.toFixed(1) + " s";
      if (card.dataset.lead) cell.title = "the worker last reported " + card.dataset.lead + " s made ahead of real time";
    }
  }

  /** The timeline as the server keeps it, when a live_status says another prompt is in force than the
   * newest entry here: a `steered` this page missed (a lobby message lost under load) is not lost. */
  async function refreshTimeline(card, jobId) {
    if (card.dataset.timelineFetch) return;
    card.dataset.timelineFetch = "1";
    try {
      const job = await api("GET", "/api/jobs/" + encodeURIComponent(jobId));
      const j = job && job.job ? job.job : job;
      if (j && j.timeline && j.timeline.length) {
        setTimeline(card, j.timeline);
        $(".job-prompt-text", card).textContent = j.timeline[j.timeline.length - 1].prompt;
      }
    } catch (e) { /* the next live_status asks again */ }
    delete card.dataset.timelineFetch;
  }

  /** A live event (live_status, steering, steered, stopping); true when `msg` was one. */
  function handleLive(msg) {
    switch (msg.type) {
      case "live_status": {
        const card = cardFor(msg.job_id);
        markLive(card, { live: true });
        card.dataset.rtf = String(msg.realtime_factor);
        card.dataset.lead = Number(msg.lead_s).toFixed(1);
        const rtf = $("[data-testid=live-rtf]", card);
        rtf.textContent = Number(msg.realtime_factor).toFixed(2) + "\u00d7";
        rtf.classList.toggle("slow", msg.realtime_factor < 1);
        rtf.title = msg.realtime_factor < 1 ? "made slower than it plays: expect stalls" : "seconds of video made per second";
        $("[data-testid=live-frames]", card).textContent = String(msg.frames);
        const entries = state.timelines.get(card) || [];
        if (!entries.length || entries[entries.length - 1].prompt !== msg.prompt) refreshTimeline(card, msg.job_id);
        return true;
      }
      case "steering": {  // taken; `steered` follows when its first frame streams
        const card = state.jobs.get(msg.job_id);
        if (card) $(".live-steering", card).textContent = "next chunk: \u201c" + msg.prompt + "\u201d";
        return true;
      }
      case "steered": {
        const card = cardFor(msg.job_id);
        markLive(card, { live: true });
        addTimelineEntry(card, { from_frame: msg.from_frame, prompt: msg.prompt });
        $(".job-prompt-text", card).textContent = msg.prompt;
        const latency = steerLatency(card, msg.prompt);
        if (latency !== null) {
          card.dataset.steerLatency = latency.toFixed(3);
          $("[data-testid=live-steer-latency]", card).textContent = latency.toFixed(2) + " s";
        }
        let waiting = false;
        for (const pending of state.steers.values()) if (pending.card === card) waiting = true;
        if (!waiting) $(".live-steering", card).textContent = "";
        return true;
      }
      case "stopping": {  // the current chunk is the last; generation_complete follows
        state.stops.delete(msg.request_id);
        const card = state.jobs.get(msg.job_id);
        if (card) $(".job-status", card).textContent = "stopping";
        return true;
      }
      default:
        return false;
    }
  }

  async function loadLiveSessions() {
    try {
      const jobs = listFrom(await api("GET", "/api/jobs?status=queued,running&limit=50"), "jobs");
      for (const j of jobs.reverse()) {  // oldest first: cards are prepended
        const id = String(j.id || j.job_id);
        if (!j.live || state.jobs.has(id)) continue;
        const card = cardFor(id, j);
        markLive(card, j);
        setStatus(card, j.status);
      }
    } catch (e) { /* the lobby's events bring them when they stream */ }
  }

  // ---------------------------------------------------------------- websocket

  function setConn(stateName, text) {
    els.conn.dataset.state = stateName;
    els.connText.textContent = text;
  }

  function send(obj) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  /** The page over the reference design's protocol (Phoenix Channels V2 on /socket/websocket, with
   * ?protocol=phoenix): the lobby's messages as pushes on topic video:lobby, their replies and the
   * topic's events turned back into the lobby's messages, behind the WebSocket interface. */
  class PhoenixLobby {
    constructor(url) {
      this.ref = 0;
      this.asked = new Map();  // ref -> what the push was
      this.readyState = WebSocket.CONNECTING;
      this.ws = new WebSocket(url + "?vsn=2.0.0");
      this.ws.onopen = () => {
        this.joinRef = this.nextRef();
        this.frame(this.joinRef, this.joinRef, "video:lobby", "phx_join", {});
      };
      this.ws.onmessage = (ev) => this.receive(JSON.parse(ev.data));
      this.ws.onclose = () => { this.readyState = WebSocket.CLOSED; if (this.onclose) this.onclose(); };
      this.ws.onerror = () => { /* onclose follows */ };
    }
    nextRef() { this.ref += 1; return String(this.ref); }
    frame(joinRef, ref, topic, event, payload) { this.ws.send(JSON.stringify([joinRef, ref, topic, event, payload])); }
    send(text) {
      const msg = JSON.parse(text);
      const ref = this.nextRef();
      this.asked.set(ref, msg);
      if (msg.type === "ping") this.frame(null, ref, "phoenix", "heartbeat", {});
      else {
        const payload = Object.assign({}, msg);
        delete payload.type;
        this.frame(this.joinRef, ref, "video:lobby", msg.type, payload);
      }
    }
    deliver(msg) { if (msg && this.onmessage) this.onmessage({ data: JSON.stringify(msg) }); }
    receive([, ref, topic, event, payload]) {
      if (event !== "phx_reply") {
        if (topic === "video:lobby" && !event.startsWith("phx_")) this.deliver(payload);
        return;
      }
      if (ref === this.joinRef) {
        if (payload.status === "ok") { this.readyState = WebSocket.OPEN; if (this.onopen) this.onopen(); }
        return;
      }
      const asked = this.asked.get(ref);
      this.asked.delete(ref);
      if (!asked) return;
      const answer = payload.response || {};
      if (payload.status !== "ok") this.deliver(Object.assign({ type: "error", request_id: asked.request_id }, answer));
      else if (asked.type === "ping") this.deliver({ type: "pong", request_id: asked.request_id });
      else if (asked.type === "cancel") {
        if (answer.state === "cancelling") this.deliver({ type: "cancelling", job_id: answer.job_id, request_id: asked.request_id });
      } else this.deliver(answer);  // `queued`
    }
    close() { this.ws.close(); }
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    setConn("connecting", state.attempt ? "reconnecting\u2026" : "connecting\u2026");
    let ws;
    try {
      ws = PHOENIX ? new PhoenixLobby(proto + "//" + location.host + "/socket/websocket")
                   : new WebSocket(proto + "//" + location.host + "/ws/lobby/");
    } catch (e) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    ws.onopen = () => {
      const wasReconnect = state.attempt > 0;
      state.attempt = 0;
      setConn("open", PHOENIX ? "connected (phoenix)" : "connected");
      clearInterval(state.pingTimer);
      state.pingTimer = setInterval(() => send({ type: "ping" }), PING_EVERY_MS);
      if (wasReconnect) resync();
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      handle(msg);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      clearInterval(state.pingTimer);
      state.ws = null;
      scheduleReconnect();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  function scheduleReconnect() {
    state.attempt += 1;
    const base = Math.min(MAX_BACKOFF_MS, 500 * Math.pow(2, state.attempt - 1));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    setConn("closed", "offline \u2013 retrying in " + Math.ceil(delay / 1000) + " s");
    state.reconnectTimer = setTimeout(connect, delay);
  }

  /** After a reconnect, ask the API where each unfinished job stands (messages may have been missed). */
  async function resync() {
    for (const [jobId, card] of state.jobs) {
      if (TERMINAL.has(card.dataset.status)) continue;
      try {
        const data = await api("GET", "/api/jobs/" + encodeURIComponent(jobId));
        applyJobRecord(card, data && data.job ? data.job : data);
      } catch (e) { /* leave it */ }
    }
    loadGallery();
    loadLiveSessions();
  }

  function applyJobRecord(card, j) {
    if (!j || !j.status) return;
    if (j.status === "succeeded") {
      setStatus(card, "succeeded");
      setProgress(card, 100);
      const url = j.url || j.video_url || j.output_url;
      if (url && !card.querySelector("video")) showVideo(card, { url });
      if (j.result) showEvaluation(card, j.result);
    } else if (j.status === "failed" || j.status === "cancelled") {
      setStatus(card, j.status);
      if (j.error) setError(card, j.error);
    } else {
      setStatus(card, j.status);
      if (typeof j.progress === "number") setProgress(card, j.progress <= 1 ? j.progress * 100 : j.progress);
    }
  }

  // ---------------------------------------------------------------- understanding

  /** Caption the card's video (a describe job); with `remix`, then put the caption in the prompt box. */
  function describeJob(card, remix) {
    if (remix && card.dataset.caption) {
      editAndRegenerate(card.dataset.caption);
      return;
    }
    if (remix) card.dataset.remix = "1";
    const req = { type: "describe", job_id: card.dataset.jobId, request_id: newRequestId() };
    if (!send(req)) {
      flash("Not connected; try again in a moment.");
      return;
    }
    state.describing.set(req.request_id, card);
    showCaption(card, "describing\u2026");
  }

  function editAndRegenerate(caption) {
    els.prompt.value = caption;
    els.prompt.focus();
    els.prompt.select();
    els.prompt.scrollIntoView({ block: "center" });
    flash("Edit the caption, then Generate.", "info");
  }

  function showCaption(card, text) {
    const el = $(".job-caption", card);
    el.textContent = text;
    el.hidden = !text;
  }

  function percent(x) { return Math.round(100 * x) + "%"; }

  function agreementText(agreement) {
    if (!agreement) return "";
    const bits = [];
    const attributes = agreement.attributes;
    if (attributes && attributes.score !== null && attributes.score !== undefined) {
      bits.push("attributes " + percent(attributes.score));
    }
    if (typeof agreement.semantic === "number") bits.push("semantic " + agreement.semantic.toFixed(2));
    return bits.length ? " (agreement with the prompt: " + bits.join(", ") + ")" : "";
  }

  /** The `evaluate` result of a generation (its completion's `evaluation`, or the job row's `result`). */
  function showEvaluation(card, evaluation) {
    if (!evaluation) return;
    if (evaluation.caption) {
      card.dataset.caption = evaluation.caption;
      showCaption(card, "\u201c" + evaluation.caption + "\u201d" + agreementText(evaluation.agreement));
    }
    const metrics = evaluation.metrics;
    const list = $(".job-metrics", card);
    if (!metrics) return;
    list.innerHTML = "";
    for (const [name, value] of Object.entries(metrics)) {
      const dt = document.createElement("dt");
      dt.textContent = name.replace(/_/g, " ");
      const dd = document.createElement("dd");
      dd.textContent = typeof value === "number" ? value.toFixed(3) : String(value);
      list.append(dt, dd);
    }
    list.hidden = false;
  }

  /** Events of describe jobs land on the card of the video they describe; true when `msg` was one. */
  function handleDescribe(msg) {
    let card = state.describing.get(msg.job_id);
    if (msg.type === "queued" && msg.request_id && state.describing.has(msg.request_id)) {
      card = state.describing.get(msg.request_id);
      state.describing.delete(msg.request_id);
      state.describing.set(msg.job_id, card);
      return true;
    }
    if (msg.type === "error" && msg.request_id && state.describing.has(msg.request_id)) {
      card = state.describing.get(msg.request_id);
      state.describing.delete(msg.request_id);
      showCaption(card, "");
      delete card.dataset.remix;
      flash((msg.code ? msg.code + ": " : "") + (msg.message || "describe refused"));
      return true;
    }
    if (!card && msg.kind === "describe" && msg.source_job_id) card = state.jobs.get(msg.source_job_id);
    if (!card) return msg.kind === "describe";  // someone else's describe job: nothing to show
    if (msg.type === "description_complete") {
      state.describing.delete(msg.job_id);
      const text = msg.answer !== null && msg.answer !== undefined ? msg.answer : msg.caption;
      card.dataset.caption = msg.caption || card.dataset.caption || "";
      showCaption(card, "\u201c" + text + "\u201d" + agreementText(msg.agreement));
      if (card.dataset.remix && msg.caption) {
        delete card.dataset.remix;
        editAndRegenerate(msg.caption);
      }
    } else if (msg.type === "description_failed" || msg.type === "cancelled") {
      state.describing.delete(msg.job_id);
      delete card.dataset.remix;
      showCaption(card, msg.type === "cancelled" ? "" : "describe failed: " + (msg.error || "unknown error"));
    }
    return true;
  }

  function handle(msg) {
    if (handleDescribe(msg) || handleLive(msg)) return;
    switch (msg.type) {
      case "queued": {
        let card = msg.request_id ? state.pending.get(msg.request_id) : null;
        if (card) {
          state.pending.delete(msg.request_id);
          bindJob(card, msg.job_id);
        } else {
          card = cardFor(msg.job_id, msg);
        }
        markLive(card, msg);
        const ahead = Number(msg.position) || 0;  // jobs ahead of this one for the same model
        setStatus(card, "queued", ahead > 0 ? "queued \u00b7 " + ahead + " ahead" : "queued");
        break;
      }
      case "started": {
        const card = cardFor(msg.job_id, msg);
        markLive(card, msg);
        setStatus(card, "running", "running");
        if (msg.worker) $(".job-eta", card).textContent = "on " + msg.worker;
        break;
      }
      case "progress": {
        const card = cardFor(msg.job_id);
        if (card.dataset.status !== "running") setStatus(card, "running");
        card.dataset.step = msg.step;
        let percent = msg.percent;
        if ((percent === undefined || percent === null) && msg.total_steps) percent = 100 * msg.step / msg.total_steps;
        setProgress(card, percent);
        const stepText = msg.total_steps ? "step " + msg.step + "/" + msg.total_steps : "";
        $(".job-eta", card).textContent = [stepText, formatEta(msg.eta_s)].filter(Boolean).join(" \u00b7 ");
        showPreview(card, msg);
        break;
      }
      case "video_chunk": {
        const card = cardFor(msg.job_id);
        appendStream(card, msg);
        if (card.dataset.live === "1") {
          $("[data-testid=live-frames]", card).textContent = String(msg.first_frame + msg.num_frames);
        }
        break;
      }
      case "generation_complete": {
        const card = cardFor(msg.job_id, msg);
        if (msg.prompt) $(".job-prompt-text", card).textContent = msg.prompt;
        setStatus(card, "succeeded", "done");
        setProgress(card, 100);
        const bits = [];
        if (msg.width && msg.height) bits.push(msg.width + "\u00d7" + msg.height);
        if (msg.num_frames) bits.push(msg.num_frames + " frames @ " + (msg.fps || "?") + " fps");
        if (msg.seed !== undefined) bits.push("seed " + msg.seed);
        if (msg.elapsed_s !== undefined) bits.push(Number(msg.elapsed_s).toFixed(1) + " s");
        if (msg.has_audio) bits.push("\u266a sound");
        $(".job-meta", card).textContent = bits.join(" \u00b7 ");
        showVideo(card, msg);
        if (msg.timeline) {
          markLive(card, Object.assign({ live: true }, msg));
          setTimeline(card, msg.timeline);
        }
        showEvaluation(card, msg.evaluation);
        loadGallery();
        break;
      }
      case "requeued": {  // its worker was lost; it waits for a worker again, `started` follows
        const card = cardFor(msg.job_id);
        setStatus(card, "queued", "re-queued");
        setProgress(card, 0);
        $(".job-eta", card).textContent = "worker lost, retrying (attempt " + ((msg.attempts || 0) + 1) +
          (msg.max_attempts ? " of " + msg.max_attempts : "") + ")";
        break;
      }
      case "generation_failed": {
        const card = cardFor(msg.job_id);
        setStatus(card, "failed");
        setError(card, (msg.error || "generation failed") + (msg.retriable ? " \u2013 you can submit it again" : ""));
        break;
      }
      case "cancelled": {
        const card = cardFor(msg.job_id);
        setStatus(card, "cancelled");
        for (const [rid, c] of state.cancels) if (c === card) state.cancels.delete(rid);
        break;
      }
      case "error": {
        const card = msg.request_id ? state.pending.get(msg.request_id) : null;
        const text = (msg.code ? msg.code + ": " : "") + (msg.message || "request refused");
        if (card) {
          state.pending.delete(msg.request_id);
          setStatus(card, "error");
          setError(card, msg.message || text);
        }
        flash(text);
        markField(msg.field);
        const steer = msg.request_id ? state.steers.get(msg.request_id) : null;
        if (steer) {
          state.steers.delete(msg.request_id);
          $(".live-steering", steer.card).textContent = "";
        }
        const stopped = msg.request_id ? state.stops.get(msg.request_id) : null;
        if (stopped) {
          state.stops.delete(msg.request_id);
          $(".job-stop", stopped).disabled = false;
        }
        const cancelled = msg.request_id ? state.cancels.get(msg.request_id) : null;
        if (cancelled) {  // a refused cancel leaves the card as it was
          state.cancels.delete(msg.request_id);
          $(".job-cancel", cancelled).disabled = false;
          setStatus(cancelled, cancelled.dataset.status);
        }
        break;
      }
      case "cancelling": {  // acknowledged; `cancelled` follows after the current step
        const card = state.jobs.get(msg.job_id);
        if (card) $(".job-status", card).textContent = "cancelling";
        break;
      }
      case "pong":
      default:
        break;
    }
  }

  // ---------------------------------------------------------------- submit

  /** Outline the form field an `error` names (its `field`), until it is edited. */
  function markField(name) {
    const input = name && els.form.querySelector("#" + CSS.escape(name));
    if (!input) return;
    if (els.longVideo.contains(input)) els.longVideo.open = true;
    input.classList.add("field-error");
    input.addEventListener("input", () => input.classList.remove("field-error"), { once: true });
    input.focus();
  }

  function collect() {
    const req = {
      type: "generate",
      prompt: els.prompt.value.trim(),
      num_frames: numOrNull(els.frames),
      width: numOrNull(els.width),
      height: numOrNull(els.height),
      steps: numOrNull(els.steps),
      guidance_scale: numOrNull(els.guidance),
      seed: numOrNull(els.seed),
      fps: numOrNull(els.fps),
      private: els.private.checked,
      request_id: newRequestId(),
    };
    if (els.model.value) req.model = els.model.value;
    if (state.imageB64) req.image = state.imageB64;
    if (els.live.checked) {  // endless: the clip-only options do not apply
      req.live = true;
      req.max_duration_s = numOrNull(els.maxDuration);
    } else {
      if (els.evaluate.checked) req.evaluate = true;
      Object.assign(req, longVideoFields());
    }
    for (const k of Object.keys(req)) if (req[k] === null) delete req[k];
    return req;
  }

  /** The "Long video" options that differ from their defaults (none: a plain clip). */
  function longVideoFields() {
    const out = {};
    const chunks = numOrNull(els.numChunks);
    if (chunks !== null && chunks !== 1) out.num_chunks = chunks;
    const duration = numOrNull(els.duration);
    if (duration !== null) out.duration_s = duration;
    const overlap = numOrNull(els.overlap);
    if (overlap !== null) out.overlap = overlap;
    const k = Number(els.interpolate.value);
    if (k && k !== 1) out.interpolate = k;
    const up = Number(els.upscale.value);
    if (up && up !== 1) out.upscale = up;
    return out;
  }

  async function submit(ev) {
    ev.preventDefault();
    const session = els.live.checked ? activeLive() : null;
    if (session) {
      const prompt = els.prompt.value.trim();
      if (prompt) steerLive(session, prompt);
      else flash("Type the new prompt first.");
      return;
    }
    const req = collect();
    if (!req.prompt) {
      flash("Type a prompt first.");
      els.prompt.focus();
      return;
    }
    const card = createCard(req);
    card.dataset.requestId = req.request_id;
    if (req.live) {
      card.dataset.mine = "1";
      markLive(card, req);
    }
    if (req.image) {
      const img = $(".job-preview", card);
      img.src = imageSrc(req.image);
      img.hidden = false;
    }
    if (send(req)) {
      state.pending.set(req.request_id, card);
      setStatus(card, "sending", "sending");
      return;
    }
    // Websocket down: the HTTP API takes the same fields; events arrive once reconnected.
    setStatus(card, "sending", "sending (http)");
    try {
      const body = Object.assign({}, req);
      delete body.type;
      const data = await api("POST", "/api/jobs", body);
      const j = data && data.job ? data.job : data;
      const jobId = j && (j.job_id || j.id);
      if (jobId) {
        bindJob(card, jobId);
        setStatus(card, "queued");
      }
    } catch (e) {
      setStatus(card, "error");
      setError(card, e.message);
    }
  }

  // ---------------------------------------------------------------- queue controls

  /** A failed or cancelled job, again: a new job (linked to it) in a new card. */
  async function retryJob(card) {
    try {
      const data = await api("POST", "/api/jobs/" + encodeURIComponent(card.dataset.jobId) + "/retry", {});
      const again = cardFor(data.job.job_id, data.job);
      setStatus(again, "queued", data.position > 0 ? "queued \u00b7 " + data.position + " ahead" : "queued");
    } catch (e) { flash("retry: " + e.message); }
  }

  async function frontJob(card) {
    try {
      const data = await api("POST", "/api/jobs/" + encodeURIComponent(card.dataset.jobId) + "/front", {});
      setStatus(card, "queued", "queued \u00b7 " + data.position + " ahead");
    } catch (e) { flash("to front: " + e.message); }
  }

  async function showDispatch(paused) {
    const toggle = document.getElementById("dispatch-toggle");
    if (!toggle) return;
    if (paused === undefined) {
      try { paused = (await api("GET", "/api/dispatch")).paused.includes("*"); } catch (e) { return; }
    }
    toggle.dataset.paused = paused ? "1" : "";
    toggle.textContent = paused ? "resume queue" : "pause queue";
  }

  async function toggleDispatch() {
    const paused = document.getElementById("dispatch-toggle").dataset.paused === "1";
    try {
      const data = await api("POST", "/api/dispatch/" + (paused ? "resume" : "pause"), { model: "*" });
      showDispatch(data.paused.includes("*"));
    } catch (e) { flash("queue: " + e.message); }
  }

  // ---------------------------------------------------------------- gallery

  let galleryLoading = false;
  async function loadGallery() {
    if (galleryLoading) return;
    galleryLoading = true;
    try {
      const jobs = listFrom(await api("GET", "/api/jobs?status=succeeded"), "jobs");
      const done = jobs.filter((j) => j.status === "succeeded" && (j.url || j.video_url || j.output_url));
      const seen = new Set();
      for (const j of done) {
        const id = String(j.id || j.job_id);
        seen.add(id);
        if (els.gallery.querySelector('[data-job-id="' + CSS.escape(id) + '"]')) continue;
        els.gallery.appendChild(galleryItem(j, id));
      }
      for (const item of Array.from(els.gallery.children)) {
        if (!seen.has(item.dataset.jobId)) item.remove();
      }
      // newest first, as the API lists them
      for (const j of done) {
        const item = els.gallery.querySelector('[data-job-id="' + CSS.escape(String(j.id || j.job_id)) + '"]');
        if (item) els.gallery.appendChild(item);
      }
      els.galleryEmpty.hidden = els.gallery.children.length > 0;
    } catch (e) {
      els.galleryEmpty.textContent = "Could not load the history: " + e.message;
      els.galleryEmpty.hidden = false;
    } finally {
      galleryLoading = false;
    }
  }

  function galleryItem(j, id) {
    const item = document.createElement("figure");
    item.className = "gallery-item";
    item.dataset.jobId = id;
    item.setAttribute("data-testid", "gallery-item");
    item.style.margin = "0";
    const video = makeVideo(j.url || j.video_url || j.output_url);
    video.autoplay = false;
    video.preload = "metadata";
    video.addEventListener("mouseenter", () => { const p = video.play(); if (p && p.catch) p.catch(() => {}); });
    video.addEventListener("mouseleave", () => video.pause());
    const cap = document.createElement("figcaption");
    cap.className = "caption";
    const p = document.createElement("p");
    p.textContent = j.prompt || "";
    const small = document.createElement("small");
    const params = Object.assign({}, j.params || {}, { model: j.model || (j.params || {}).model });
    const when = j.finished_at || j.created_at;
    small.textContent = [describeParams(params), when ? new Date(when).toLocaleString() : ""].filter(Boolean).join(" \u00b7 ");
    cap.append(p, small);
    item.append(video, cap);
    return item;
  }

  // ---------------------------------------------------------------- wiring

  els.form.addEventListener("submit", submit);
  els.model.addEventListener("change", () => applyModel(true));
  els.image.addEventListener("change", readImage);
  els.imageClear.addEventListener("click", clearImage);
  els.galleryRefresh.addEventListener("click", loadGallery);
  els.queueClear.addEventListener("click", () => {
    for (const card of Array.from(els.queue.children)) {
      if (TERMINAL.has(card.dataset.status)) removeCard(card);
    }
  });
  els.prompt.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || ev.isComposing) return;
    // Ctrl-Enter submits; in Live mode a plain Enter starts or steers (Shift-Enter: a new line)
    if (ev.ctrlKey || ev.metaKey || (els.live.checked && !ev.shiftKey)) {
      ev.preventDefault();
      els.form.requestSubmit();
    }
  });
  els.live.addEventListener("change", refreshLiveForm);

  const dispatchToggle = document.getElementById("dispatch-toggle");
  if (dispatchToggle) dispatchToggle.addEventListener("click", toggleDispatch);

  refreshEmpty();
  refreshLiveForm();
  setInterval(liveTick, LIVE_TICK_MS);
  loadModels();
  loadGallery();
  loadLiveSessions();
  showDispatch();
  connect();

  // for tests and debugging
  window.videoUI = { state, handle, connect };
})();
