"""Train the causal video tokenizer (`tokenizer.CausalVideoTokenizer`) on the world's renderer.

    nice -n 19 python -m generator.builtin.train_tokenizer --out runs/tokenizer --steps 3000
    nice -n 19 python -m generator.builtin.train_tokenizer --out runs/tokenizer --steps 6000 --resume

Each step renders random scenes (one to three shapes, at a random moment of their motion) for a
few frames at 64 pixels (the encoder's input) and at 256 (the decoder's target), and minimises,
over a random window of the output (`--crop`: the decoder is convolutional), L1 plus L1 near the
target's edges (`train_upsampler.edge_l1`: edges are a few percent of a frame and what sharpness
is measured on). Every `--ckpt-every` steps: a checkpoint
(OUT/checkpoint.pt, what --resume reads), the EMA weights as OUT/tokenizer/ (save_pretrained), and
a line in OUT/log.jsonl with PSNR and edge sharpness against the renderer on fixed held-out
scenes. `--resume --freeze-encoder` trains the decoder alone on (once a denoiser trains on
the latent). On a GPU: `--device cuda --batch 32` (the rest as is).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from generator.builtin import world
from generator.builtin.tokenizer import CausalVideoTokenizer
from generator.builtin.train_upsampler import edge_l1


def random_scenes(rng: random.Random, count: int, num_frames: int) -> list:
    """Scenes of one to three shapes placed anywhere (partly off the canvas too), bouncing."""
    scenes = []
    for _ in range(count):
        objects = rng.choice([1, 1, 2, 2, 3])
        colours = rng.sample(list(world.COLOURS), objects)
        scene = [world.sample_shape(rng, num_frames, colour=c) for c in colours]
        for m in scene:
            m.x0, m.y0 = rng.uniform(-4, 68), rng.uniform(-4, 68)
        scenes.append(scene)
    return scenes


def clips(scenes: list, num_frames: int) -> tuple:
    return world.render(scenes, num_frames, 64), world.render(scenes, num_frames, 256)


def quality(tokenizer: CausalVideoTokenizer, seed: int = 12345, count: int = 8, num_frames: int = 8) -> dict:
    """PSNR (dB) and edge sharpness ratio of decoded frames against the renderer at 256."""
    from generator.evaluate import edge_sharpness

    rng = random.Random(seed)
    low, high = clips(random_scenes(rng, count, num_frames), num_frames)
    with torch.no_grad():
        decoded = tokenizer(low).clamp(-1, 1)
    mse = ((decoded - high) / 2).pow(2).mean().item()
    ours = np.concatenate([world.to_uint8_frames(v) for v in decoded])
    truth = np.concatenate([world.to_uint8_frames(v) for v in high])
    return {"psnr": 10 * np.log10(1.0 / max(mse, 1e-12)),
            "sharpness_ratio": edge_sharpness(ours) / max(edge_sharpness(truth), 1e-9)}


def steepness_shortfall(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How much less steep the output's edges are than the target's near each target edge, in each
    colour channel: the central-difference gradient, its largest within 2 pixels (as
    `evaluate.edge_sharpness` reads an edge). Where an edge's exact place is uncertain L1 is lowest
    for a soft ramp; this asks for one steep step near it (its place is left to the L1). The output
    is clamped to what a frame can show first (overshoot past black and full brightness met the
    term while the edge stayed soft), and each channel answers for itself (read on the brightest
    channel, a bright fringe of another colour beside a soft edge met it, and the evaluator saw a
    colour that was not asked)."""
    def steepness(v):
        v = v.clamp(-1.0, 1.0)
        gx = F.pad(v[..., :, 2:] - v[..., :, :-2], (1, 1)) / 2
        gy = F.pad(v[..., 2:, :] - v[..., :-2, :], (0, 0, 1, 1)) / 2
        return F.max_pool2d((gx * gx + gy * gy + 1e-8).sqrt(), 5, stride=1, padding=2)

    wanted = steepness(target)
    near = (wanted > 0.1).float()
    return ((wanted - steepness(output)).clamp(min=0) * near).sum() / near.sum().clamp(min=1.0)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    checkpoint_path = os.path.join(args.out, "checkpoint.pt")
    state = {"step": 0, "losses": [], "seconds": 0.0}
    model = CausalVideoTokenizer(latent_channels=args.latent_channels, levels=args.levels,
                                 channels=tuple(args.channels), colour_channels=args.colour_channels)
    if args.init_from:  # every weight whose shape still fits (a changed latent: the others start fresh)
        own = model.state_dict()
        from safetensors.torch import load_file

        given = load_file(os.path.join(args.init_from, "diffusion_pytorch_model.safetensors"))
        model.load_state_dict({k: v for k, v in given.items() if k in own and own[k].shape == v.shape}, strict=False)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if args.resume and os.path.exists(checkpoint_path):
        saved = torch.load(checkpoint_path, weights_only=False, map_location="cpu")
        model = CausalVideoTokenizer.from_config(saved["config"])
        model.load_state_dict(saved["model"])
        ema = copy.deepcopy(model).requires_grad_(False)
        ema.load_state_dict(saved["ema"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        print(f"resumed at step {state['step']}", flush=True)
    if args.freeze_encoder:  # the latent a denoiser trains on stays as it is; the decoder goes on
        ema_params = dict(ema.named_parameters())
        for name, param in model.named_parameters():
            if name.startswith("enc_"):
                param.data.copy_(ema_params[name].data)
                param.requires_grad_(False)
    model.to(device)
    ema.to(device)
    rng = random.Random(f"{args.seed}:{state['step']}")
    deadline = time.time() + args.max_minutes * 60 if args.max_minutes else float("inf")

    def save():
        torch.save({"config": dict(model.config), "model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "state": state}, checkpoint_path + ".tmp")
        os.replace(checkpoint_path + ".tmp", checkpoint_path)
        ema.save_pretrained(os.path.join(args.out, "tokenizer"))
        measured = quality(ema.cpu())
        ema.to(device)
        line = {"step": state["step"], "seconds": round(state["seconds"], 1),
                "loss": float(np.mean(state["losses"][-100:]))} | measured
        with open(os.path.join(args.out, "log.jsonl"), "a") as fh:
            fh.write(json.dumps(line) + "\n")
        with open(os.path.join(args.out, "training.json"), "w") as fh:
            json.dump({"step": state["step"], "seconds": state["seconds"], "args": vars(args)} | measured, fh, indent=1)
        print(json.dumps(line), flush=True)

    bar = tqdm(total=args.steps, initial=state["step"], desc="tokenizer", unit="step", mininterval=10)
    while state["step"] < args.steps and time.time() < deadline:
        started = time.time()
        frac = state["step"] / max(args.steps, 1)
        lr = args.lr * min(1.0, (state["step"] + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        low, high = clips(random_scenes(rng, args.batch, args.frames), args.frames)
        latents = model.encode(low.to(device))
        if args.crop:  # decode a random window of the latent: the decoder is convolutional
            y, x = (rng.randrange(latents.shape[-1] - args.crop + 1) for _ in range(2))
            latents = latents[..., y:y + args.crop, x:x + args.crop]
            high = high[..., y * 16:(y + args.crop) * 16, x * 16:(x + args.crop) * 16]
        decoded = model.decode(latents)
        b, c, t, h, w = decoded.shape
        flat = lambda v: v.transpose(1, 2).reshape(b * t, c, h, w)  # noqa: E731
        loss = edge_l1(flat(decoded), flat(high.to(device)))
        if args.steepness_weight:
            loss = loss + args.steepness_weight * steepness_shortfall(flat(decoded), flat(high.to(device)))
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
        bar.set_postfix(loss=f"{np.mean(state['losses'][-50:]):.4f}")
        if state["step"] % args.ckpt_every == 0 or state["step"] == args.steps:
            save()
    bar.close()
    if state["step"] % args.ckpt_every:
        save()
    return state


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/tokenizer")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--latent-channels", type=int, default=6)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--colour-channels", type=int, default=3, help="latent channels holding the mean colour")
    parser.add_argument("--init-from", help="a tokenizer folder to start from (weights whose shapes fit)")
    parser.add_argument("--channels", type=int, nargs=3, default=[24, 48, 64])
    parser.add_argument("--crop", type=int, default=8, help="decode a crop of this many latent positions "
                        "(x 16 output pixels) per step; 0: whole frames")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--ckpt-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-minutes", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steepness-weight", type=float, default=0.0,
                        help="weight of steepness_shortfall beside the edge L1 (0: L1 alone)")
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="train the decoder alone (the encoder as the EMA has it): once a denoiser trains on "
                             "this tokenizer's latent")
    return parser.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
