"""Train the built-in model's frame upsampler (`model.FrameUpsampler`) on the world's renderer.

    python -m generator.builtin.train_upsampler --out runs/upsampler --steps 3000

Each step draws random scenes at a random moment of their motion and renders them twice: at
the native 64 pixels (the input, softened as the denoiser's output is: a random blur and a
little noise) and at 4x that (the target, anti-aliased over one pixel). L1 loss: where the
blurred input leaves an edge's place uncertain, L1 picks one sharp edge where L2 would
average them into a soft one; the pixels near the target's edges count again on their own
(`edge_l1`), as they are what the upsampler is for and only a few percent of a frame. Writes
`upsampler/` (save_pretrained) into --out; copy it into a pipeline folder (e.g. generator/weights/builtin/) to use it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from generator.builtin import world
from generator.builtin.model import FrameUpsampler


def moment(scene: list, rng: random.Random, num_frames: int = 16) -> list:
    """The scene moved on to a random frame of its clip (render draws frame 0 of the result)."""
    k = rng.randrange(num_frames)
    return [dataclasses.replace(m, x0=m.x0 + world.DIRECTIONS[m.direction][0] * m.speed * k,
                                y0=m.y0 + world.DIRECTIONS[m.direction][1] * m.speed * k) for m in scene]


def soften(frames: torch.Tensor, rng: random.Random, max_blur: float, max_noise: float) -> torch.Tensor:
    """A Gaussian blur of random width and Gaussian noise, per frame (N x 3 x h x w)."""
    out = []
    for frame in frames:
        sigma = rng.uniform(0.0, max_blur)
        if sigma > 0.1:
            taps = torch.arange(-3, 4, dtype=torch.float32)
            kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
            kernel = (kernel / kernel.sum()).to(frame)
            padded = F.pad(frame[:, None], (3, 3, 3, 3), mode="replicate")
            frame = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, 7)), kernel.view(1, 1, 7, 1))[:, 0]
        out.append(frame + rng.uniform(0.0, max_noise) * torch.randn_like(frame))
    return torch.stack(out)


def batch(rng: random.Random, size: int, scale: int, args) -> tuple:
    scenes = [moment(world.sample_scene(rng, 16, two_shapes_prob=0.5), rng) for _ in range(size)]
    low = world.render(scenes, 1, 64)[:, :, 0]
    high = world.render(scenes, 1, 64 * scale)[:, :, 0]
    return soften(low, rng, args.max_blur, args.max_noise), high


def edge_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 over all pixels plus L1 over the pixels within 2 of a target edge."""
    step_x = (target[..., :, 1:] - target[..., :, :-1]).abs().amax(1, keepdim=True)
    step_y = (target[..., 1:, :] - target[..., :-1, :]).abs().amax(1, keepdim=True)
    edges = F.pad(step_x, (0, 1)) + F.pad(step_y, (0, 0, 0, 1)) > 0.1
    near = F.max_pool2d(edges.float(), 5, stride=1, padding=2).expand_as(target)
    error = (output - target).abs()
    return error.mean() + (error * near).sum() / near.sum().clamp(min=1.0)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    model = FrameUpsampler(kernel=args.kernel, hidden=args.hidden, layers=args.layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.steps, pct_start=0.05)
    losses, started = [], time.time()
    for step in tqdm(range(args.steps), desc="upsampler", unit="step"):
        low, high = batch(rng, args.batch, model.config.scale, args)
        loss = edge_l1(model(low), high)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.save_pretrained(os.path.join(args.out, "upsampler"))
    state = {"steps": args.steps, "seconds": time.time() - started, "final_loss": float(np.mean(losses[-50:]))}
    with open(os.path.join(args.out, "upsampler_training.json"), "w") as fh:
        json.dump(state | {"args": vars(args)}, fh, indent=1)
    return state | {"losses": losses}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/upsampler")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=16, help="frames per step")
    parser.add_argument("--kernel", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-blur", type=float, default=1.2, help="largest Gaussian blur sigma of an input, pixels")
    parser.add_argument("--max-noise", type=float, default=0.04)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
