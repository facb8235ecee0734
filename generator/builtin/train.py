"""Train the built-in text-to-video model from scratch.

    python -m generator.builtin.train --out runs/builtin --steps 6000
    python -m generator.builtin.train --out runs/builtin --steps 8000 --resume   # go on
    python -m generator.builtin.train --out runs/more --init-from generator/weights/builtin
    python -m generator.builtin.train --data path/to/videos --out runs/mine        # real clips

Synthetic clips by default; `--data` trains on videos (a folder, each `name.mp4` captioned by
`name.txt` beside it, else by its file name, or a CSV / JSON-lines manifest), streamed:
DataLoader workers decode one random window of one random video at a time, so memory does not
grow with the number of videos. DDPM training: a random
timestep per sample, x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, MSE on the predicted clean
clip x0 (see `training_scheduler` for why x0 rather than eps), weighted by clamp(SNR, 1, 5)
so the low-noise steps that shape edges are not drowned by the noisy ones (Min-SNR style);
`--timestep-bias-range` draws a band of timesteps more often (where shapes get decided);
10% of captions are dropped (classifier-free guidance) and half the clips are given
their first frame(s) (image-to-video). Writes `checkpoint.pt` (resumable), `pipeline/`
(EMA weights via save_pretrained) and `loss.png` every `--ckpt-every` steps.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import random
import time

import av
import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm import tqdm

from generator.builtin import world
from generator.builtin.model import FrameUpsampler, VideoUNet
from generator.builtin.sample import BuiltinPipeline, training_scheduler
from generator.builtin.text import TextEncoder, shared_text_encoder

CAPTION_DROP = 0.1
LOSS_WEIGHT_MIN, LOSS_WEIGHT_MAX = 1.0, 5.0


class SyntheticClips:
    """Endless batches of rendered scenes, drawn from an RNG seeded by (seed, first step): a
    resumed run continues with new scenes, reproducibly."""

    def __init__(self, num_frames: int, size: int, seed: int, two_shapes_prob: float = 0.25):
        self.num_frames, self.size, self.seed, self.two_shapes_prob = num_frames, size, seed, two_shapes_prob

    def batches(self, batch_size: int, start_step: int, device=None):
        rng = random.Random(f"{self.seed}:{start_step}")
        while True:
            scenes = [world.sample_scene(rng, self.num_frames, self.two_shapes_prob) for _ in range(batch_size)]
            captions = [world.caption(s, rng) for s in scenes]
            yield world.render(scenes, self.num_frames, self.size, device=device), captions


VIDEO_EXTENSIONS = {".mp4", ".webm", ".mov", ".mkv", ".avi"}


def video_index(source: str) -> list:
    """[(video path, caption)] without opening a video. `source` is a folder (searched
    recursively; each `name.mp4` captioned by `name.txt` beside it, else by its file name) or a
    manifest: a CSV with a header, or JSON lines, naming `video` (or `path` / `file`) and
    `caption` (or `text` / `prompt`), paths relative to the manifest's folder."""
    if os.path.isdir(source):
        items = []
        for root, folders, files in os.walk(source):
            folders.sort()
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext.lower() not in VIDEO_EXTENSIONS:
                    continue
                text_file = os.path.join(root, stem + ".txt")
                caption = open(text_file).read().strip() if os.path.exists(text_file) else stem.replace("_", " ")
                items.append((os.path.join(root, name), caption))
        return items
    with open(source, newline="") as fh:
        rows = list(csv.DictReader(fh)) if source.lower().endswith(".csv") else [json.loads(line) for line in fh
                                                                                if line.strip()]
    folder = os.path.dirname(os.path.abspath(source))

    def field(row, names):
        value = next((row[n] for n in names if row.get(n)), None)
        if value is None:
            raise SystemExit(f"{source}: a row without any of {names}: {row}")
        return value

    return [(os.path.join(folder, field(row, ("video", "path", "file"))),
             str(field(row, ("caption", "text", "prompt"))).strip()) for row in rows]


def read_window(path: str, num_frames: int, size: int, rng: random.Random):
    """A random window of `num_frames` consecutive frames of one video, resized so its short side
    is `size` (aspect kept) and cropped to size x size at a random place: T x size x size x 3
    uint8, or None when the video is shorter or cannot be read. Seeks near the window's start
    (to the keyframe before it) instead of decoding from the beginning."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                return None
            seconds = stream.duration * stream.time_base if stream.duration else (container.duration or 0) / 1e6
            total = stream.frames or int(seconds * rate)  # WebM and MKV store no frame count
            if total < num_frames:
                return None
            start = rng.randrange(total - num_frames + 1)
            first_pts = stream.start_time or 0
            if start:
                container.seek(first_pts + int(start / rate / stream.time_base), stream=stream)
            width, height = stream.codec_context.width, stream.codec_context.height
            scale = size / min(width, height)
            resized = (max(size, round(width * scale)), max(size, round(height * scale)))
            x0, y0 = rng.randint(0, resized[0] - size), rng.randint(0, resized[1] - size)
            frames = []
            for frame in container.decode(stream):
                if round(float((frame.pts - first_pts) * stream.time_base * rate)) < start:
                    continue  # decoded from the keyframe before the window
                image = frame.to_ndarray(width=resized[0], height=resized[1], format="rgb24")
                frames.append(image[y0:y0 + size, x0:x0 + size])
                if len(frames) == num_frames:
                    return np.stack(frames)
    except (av.error.FFmpegError, IndexError):
        pass
    return None


class VideoWindows(torch.utils.data.IterableDataset):
    """Endless (frames, caption) samples, each a random window of a random video of `items`,
    decoded when asked for: memory does not grow with the number of videos."""

    MAX_FAILURES = 200  # in a row: the videos are all too short or unreadable

    def __init__(self, items: list, num_frames: int, size: int, seed: int):
        self.items, self.num_frames, self.size, self.seed = items, num_frames, size, seed
        self.start_step = 0

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        rng = random.Random(f"{self.seed}:{self.start_step}:{worker.id if worker else 0}")
        failures = 0
        while failures < self.MAX_FAILURES:
            path, caption = rng.choice(self.items)
            frames = read_window(path, self.num_frames, self.size, rng)
            if frames is None:
                failures += 1
                continue
            failures = 0
            yield torch.from_numpy(frames), caption
        raise RuntimeError(f"{self.MAX_FAILURES} videos in a row were shorter than {self.num_frames} frames "
                           "or could not be decoded")


class VideoFolderClips:
    """Training clips from videos on disk (`video_index`), decoded by DataLoader workers."""

    def __init__(self, source: str, num_frames: int, size: int, seed: int, workers: int = 2):
        items = video_index(source)
        if not items:
            raise SystemExit(f"no videos in {source}")
        self.dataset, self.workers = VideoWindows(items, num_frames, size, seed), workers

    def batches(self, batch_size: int, start_step: int, device=None):
        self.dataset.start_step = start_step
        loader = iter(torch.utils.data.DataLoader(self.dataset, batch_size=batch_size, num_workers=self.workers))
        # the workers have started; B x T x H x W x 3 uint8 -> B x 3 x T x H x W in [-1, 1]
        return ((frames.to(device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0, list(captions))
                for frames, captions in loader)


def conditioning(clips: torch.Tensor, rng: random.Random) -> tuple:
    """Half the clips get no frames, 30% their first frame, 20% their first 2-6 frames."""
    b, _, t = clips.shape[:3]
    mask = torch.zeros(b, 1, t, 1, 1, device=clips.device)
    for i in range(b):
        r = rng.random()
        given = 0 if r < 0.5 else 1 if r < 0.8 else rng.randint(2, min(6, t - 1))
        mask[i, :, :given] = 1.0
    return clips * mask, mask


def save_loss_curve(losses: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 100)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.25, label="loss")
    ax.plot(steps[window - 1:], smooth, label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="SNR-weighted MSE on x0", yscale="log", title="built-in model training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def learning_rate(args, step: int) -> float:
    """Linear warm-up, then constant or a cosine decay to lr * lr_min_ratio at --steps."""
    warm = min(1.0, (step + 1) / args.warmup)
    if args.lr_schedule == "constant":
        return args.lr * warm
    progress = min(1.0, max(0, step - args.warmup) / max(1, args.steps - args.warmup))
    cosine = args.lr_min_ratio + (1 - args.lr_min_ratio) * 0.5 * (1 + np.cos(np.pi * progress))
    return float(args.lr * warm * cosine)


def timestep_weights(args, num_timesteps: int) -> torch.Tensor:
    """Sampling weights over the training timesteps: uniform, with --timestep-bias-range drawn
    --timestep-bias-multiplier times as often. The square-vs-circle decision is made at high
    noise (t ~ 500-850): a CPU-trained model predicted round x0 there while keeping corners
    it was shown at t < 300 (the idea of diffusers' --timestep_bias_strategy range)."""
    weights = torch.ones(num_timesteps)
    if args.timestep_bias_range:
        start, end = args.timestep_bias_range
        weights[start:end] *= args.timestep_bias_multiplier
    return weights / weights.sum()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def train(args) -> dict:
    launched = time.time()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    os.makedirs(args.out, exist_ok=True)
    data = (VideoFolderClips(args.data, args.frames, args.size, args.seed, args.workers) if args.data
            else SyntheticClips(args.frames, args.size, args.seed, args.two_shapes_prob))
    state = {"step": 0, "losses": [], "seconds": 0.0}
    checkpoint_path = os.path.join(args.out, "checkpoint.pt")
    saved = None
    if args.resume and os.path.exists(checkpoint_path):
        saved = torch.load(checkpoint_path, weights_only=False, map_location="cpu")
        state = saved["state"]
    # loader workers fork here, before the text encoder and the model are in memory, and decode
    # the first batches while those load
    batches = data.batches(args.batch, state["step"], device)
    text = shared_text_encoder() if device.type == "cpu" else TextEncoder(device=device)
    scheduler: DDPMScheduler = training_scheduler(args.zero_terminal_snr)
    alphas = scheduler.alphas_cumprod.to(device)
    t_weights = timestep_weights(args, scheduler.config.num_train_timesteps).to(device)
    if saved is not None:
        model = VideoUNet.from_config(saved["config"])
        model.load_state_dict(saved["model"])
    elif args.init_from:  # fine-tune shipped weights (a pipeline folder) with a fresh optimizer
        base = VideoUNet.from_pretrained(os.path.join(args.init_from, "unet"))
        config = {k: v for k, v in base.config.items() if not k.startswith("_")}  # no "_use_default_values"
        model = VideoUNet.from_config(config | {"object_tokens": args.object_tokens or config["object_tokens"]})
        # object attention added to a model without it starts at zero (its output layer): same outputs
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        assert not unexpected and all(".object_attn." in key for key in missing), (missing, unexpected)
    else:
        model = VideoUNet(channels=tuple(args.channels), object_tokens=args.object_tokens)
    model.to(device)
    # the upsampler of --init-from's pipeline is not trained here; it travels into pipeline/
    carried = args.init_from and os.path.join(args.init_from, "upsampler")
    upsampler = FrameUpsampler.from_pretrained(carried) if carried and os.path.isdir(carried) else None
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if saved is not None:
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])  # moves its state to the parameters' device
        print(f"resumed at step {state['step']}")
    rng = random.Random(args.seed + state["step"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    deadline = time.time() + args.max_minutes * 60 if args.max_minutes else float("inf")

    def save():
        torch.save({"config": dict(model.config), "model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "state": state},
                   checkpoint_path + ".tmp")
        os.replace(checkpoint_path + ".tmp", checkpoint_path)
        BuiltinPipeline(ema, scheduler, text, upsampler).save_pretrained(os.path.join(args.out, "pipeline"))
        save_loss_curve(state["losses"], os.path.join(args.out, "loss.png"))
        with open(os.path.join(args.out, "training.json"), "w") as fh:
            json.dump({k: v for k, v in state.items() if k != "losses"} | {"args": vars(args)}, fh, indent=1)

    model.train()
    bar = tqdm(total=args.steps, initial=state["step"], desc="training", unit="step")
    while state["step"] < args.steps and time.time() < deadline:
        started = time.time()
        clips, captions = next(batches)
        if launched:
            print(f"first step starts {time.time() - launched:.2f} s after train() was called", flush=True)
            launched = None
        captions = ["" if rng.random() < CAPTION_DROP else c for c in captions]
        text_inputs = text(captions, objects=True)
        cond_video, cond_mask = conditioning(clips, rng)
        noise = torch.randn_like(clips)
        t = torch.multinomial(t_weights, clips.shape[0], replacement=True)
        a = alphas[t].view(-1, 1, 1, 1, 1)
        noisy = a.sqrt() * clips + (1 - a).sqrt() * noise
        with autocast:
            predicted = model(noisy, t, *text_inputs, cond_video=cond_video, cond_mask=cond_mask).float()
        # frames given as conditioning still count: the model must keep them unchanged
        snr = a.flatten() / (1 - a.flatten())
        per_clip = (predicted - clips).pow(2).mean(dim=(1, 2, 3, 4))
        loss = (per_clip * snr.clamp(LOSS_WEIGHT_MIN, LOSS_WEIGHT_MAX)).mean()
        lr = learning_rate(args, state["step"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        decay = min(args.ema, (1 + state["step"]) / (10 + state["step"]))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
        state["step"] += 1
        state["losses"].append(loss.item())
        state["seconds"] += time.time() - started
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(state['losses'][-50:]):.4f}", lr=f"{lr:.1e}")
        if state["step"] % args.ckpt_every == 0 or state["step"] == args.steps:
            save()
    bar.close()
    if state["step"] % args.ckpt_every:  # stopped by --max-minutes between checkpoints
        save()
    return state


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/builtin", help="output folder (checkpoint, pipeline/, loss.png)")
    parser.add_argument("--data", help="folder of videos, or a CSV / JSON-lines manifest (see video_index); "
                                       "synthetic shapes when omitted")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes decoding --data videos")
    parser.add_argument("--two-shapes-prob", type=float, default=0.25,
                        help="share of synthetic scenes with two shapes")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, nargs=3, default=[64, 128, 256])
    parser.add_argument("--object-tokens", action="store_true",
                        help="attend to one text state per described object (added to an --init-from model)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                        help="after warm-up: constant, or cosine decay to lr * --lr-min-ratio at --steps")
    parser.add_argument("--lr-min-ratio", type=float, default=0.1)
    parser.add_argument("--timestep-bias-range", type=int, nargs=2, metavar=("START", "END"),
                        help="draw training timesteps in [START, END) more often (see --timestep-bias-multiplier)")
    parser.add_argument("--timestep-bias-multiplier", type=float, default=2.0)
    parser.add_argument("--zero-terminal-snr", action="store_true",
                        help="rescale the betas so the last timestep is pure noise (see sample.training_scheduler)")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--ckpt-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (auto: cuda when there is one)")
    parser.add_argument("--max-minutes", type=float, default=0,
                        help="stop (and save) after this much wall time, e.g. to fit a GPU lease")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--init-from", help="start from a pipeline folder's weights, e.g. generator/weights/builtin")
    return parser.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
