"""Train the v3 chunk denoiser (`causal.ChunkDenoiser`) in a trained tokenizer's latent.

    nice -n 19 python -m generator.builtin.train_causal --tokenizer runs/tokenizer/tokenizer \\
        --out runs/causal --steps 4000            # add --resume to go on from OUT/checkpoint.pt

Each example is one chunk of a scene of one to three shapes in the endless world (bouncing,
with random stops, turns and speed-ups at chunk starts), and what comes before it: nothing
(text-to-video), one frame (image-to-video) or up to `context` frames (continuation, a live
video's own past). Frames are rendered at 64 pixels and encoded by the frozen tokenizer encoder.
Noise levels are drawn half uniformly, half from the few-step sampling levels. Every
`--ckpt-every` steps: OUT/checkpoint.pt, a pipeline folder OUT/pipeline/ (the tokenizer and the
EMA denoiser, what `BUILTIN_V3_MODEL_PATH` or `--model-path` reads), and a line in OUT/log.jsonl
with held-out text-to-video clips read by the evaluator's frame analysis. GPU: `--device cuda
--batch 128` (the rest as is).
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
from tqdm import tqdm

from generator.builtin import world
from generator.builtin.causal import ChunkDenoiser, layout_rows, object_ids, sample_levels
from generator.builtin.tokenizer import CausalVideoTokenizer, quantize
from generator.interface import GenerationRequest

OBJECT_COUNTS = (1, 2, 3)
OBJECT_COUNT_WEIGHTS = (0.4, 0.35, 0.25)
EVENT_RATE = 0.15  # per object and chunk start of a continuation


def example(rng: random.Random, chunk: int, context: int, scene_layout: float = 0.0) -> dict:
    """One training chunk: its scene, events, which frames are context and which the chunk, and whether it
    gets its layout (a clip's first chunk; with `scene_layout`, that share of continuations: a clip made
    from text knows its scene at every chunk, one continuing given frames does not)."""
    count = rng.choices(OBJECT_COUNTS, OBJECT_COUNT_WEIGHTS)[0]
    colours = rng.sample(list(world.COLOURS), count)
    scene = [world.sample_shape(rng, 16, colour=c) for c in colours]
    mode = rng.random()
    if mode < 0.35:
        start, given = 0, 0
    elif mode < 0.45:
        start, given = 1, 1
    else:
        start = chunk * rng.randint(1, 6)
        given = min(start, rng.choice([context, context, context, 3, 2, 1]))
    events, asked = [], [{"colour": m.colour, "shape": m.shape, "direction": m.direction} for m in scene]
    for boundary in range(2 * chunk, start + 1, chunk):
        for index, m in enumerate(scene):
            if rng.random() >= EVENT_RATE:
                continue
            kind = rng.choice(["go", "go", "stop", "faster"])
            state = asked[index]
            if kind == "go":
                direction = rng.choice([d for d in world.DIRECTIONS if d != state["direction"] or state.get("stopped")])
                events.append(world.Event(boundary, index, "go", direction))
                state.update(direction=direction, stopped=False)
            elif kind == "stop" and not state.get("stopped"):
                events.append(world.Event(boundary, index, "stop"))
                state["stopped"] = True
            elif kind == "faster" and not state.get("fast") and not state.get("stopped"):
                events.append(world.Event(boundary, index, "faster"))
                state["fast"] = True
            else:
                continue
            state["steer_at"] = boundary
    for state in asked:
        state["steer"] = state.pop("steer_at", None) == start and start > 0
    with_layout = start == 0 or (mode >= 0.45 and rng.random() < scene_layout)
    return {"scene": scene, "events": events, "start": start, "given": given, "objects": asked,
            "layout": with_layout}


def batch(rng: random.Random, size: int, tokenizer: CausalVideoTokenizer, chunk: int, context: int,
          max_objects: int, scene_layout: float = 0.0) -> tuple:
    items = [example(rng, chunk, context, scene_layout) for _ in range(size)]
    length = max(item["start"] for item in items) + chunk
    clips = world.render([item["scene"] for item in items], length, 64, bounce=True,
                         events=[item["events"] for item in items])
    # the encoder reads each frame alone: encode just the frames each example uses
    windows = [clips[i, :, item["start"] - item["given"]:item["start"] + chunk] for i, item in enumerate(items)]
    with torch.no_grad():
        encoded = tokenizer.encode(torch.cat(windows, dim=1)[None].to(tokenizer.device))[0].cpu()
    targets, contexts, masks, ids, id_masks, layouts, layout_masks = [], [], [], [], [], [], []
    offset = 0
    for item in items:
        k = item["given"]
        latents = encoded[:, offset:offset + k + chunk]
        offset += k + chunk
        targets.append(latents[:, k:])
        ctx = torch.zeros(latents.shape[0], context, *latents.shape[2:])
        mask = torch.zeros(context, dtype=torch.bool)
        if k:
            ctx[:, context - k:] = latents[:, :k]
            mask[context - k:] = True
        contexts.append(ctx)
        masks.append(mask)
        obj, obj_mask = object_ids(item["objects"], max_objects)
        ids.append(obj)
        id_masks.append(obj_mask)
        # the scene's layout at the chunk's first frame, as sampling moves it (a first chunk: where it starts)
        bodies = []
        world.simulate(item["scene"], item["start"] + 1, item["events"], bodies)
        layouts.append(layout_rows([body.layout() for body in bodies], max_objects))
        layout_masks.append(item["layout"])
    return (torch.stack(targets), torch.stack(contexts), torch.stack(masks), torch.stack(ids), torch.stack(id_masks),
            torch.stack(layouts), torch.tensor(layout_masks))


def foreground_weights(target: torch.Tensor, weight: float) -> torch.Tensor:
    """B x 1 x T x S x S: `weight` at the latent positions a shape covers, 1 on the background. The
    shapes cover ~5% of the positions: with a plain mean the loss is mostly background, and the
    network learns to draw an empty canvas long before it draws the shapes."""
    background = target.flatten(2).median(dim=2).values[..., None, None, None]  # per example and channel
    covered = (target - background).abs().amax(dim=1, keepdim=True) > 0.25
    return 1.0 + (weight - 1.0) * covered.float()


@torch.no_grad()
def own_context(model: ChunkDenoiser, context: torch.Tensor, context_mask: torch.Tensor, objects: torch.Tensor,
                object_mask: torch.Tensor, share: float, levels: int) -> torch.Tensor:
    """For `share` of the examples with context: the context frames as the network itself redraws them (noised
    to a level in [0.3, 0.9], its x0 snapped to the latent's levels). A live video's context is its own output,
    never the renderer's: trained only on clean context, its objects melted away within ten seconds of live
    video; this teaches it to restore them from frames that drew them imperfectly."""
    b = context.shape[0]
    redraw = (torch.rand(b, device=context.device) < share) & context_mask.any(1)
    if not redraw.any():
        return context
    level = 0.3 + 0.6 * torch.rand(b, device=context.device)
    s = level.view(b, 1, 1, 1, 1)
    was_training = model.training
    model.eval()
    drawn = model((1 - s) * context + s * torch.randn_like(context), level, objects, object_mask)
    model.train(was_training)
    drawn = quantize(drawn, levels)
    return torch.where(redraw.view(b, 1, 1, 1, 1), drawn * context_mask[:, None, :, None, None], context)


def noised_context(context: torch.Tensor, context_mask: torch.Tensor, top: float) -> tuple:
    """The context frames noised to a level drawn per example from [0, `top`] (a quarter of them
    clean), and that level, which the network is told (`context_noise`)."""
    b = context.shape[0]
    level = torch.rand(b, device=context.device) * top * (torch.rand(b, device=context.device) >= 0.25)
    s = level.view(b, 1, 1, 1, 1)
    noisy = ((1 - s) * context + s * torch.randn_like(context)) * context_mask[:, None, :, None, None]
    return noisy, level


def quality(pipeline_dir: str, count: int = 9, steps: int = 2) -> dict:
    """Held-out text-to-video clips (16 frames, 256x256, no MP4 round trip: a quick check per
    checkpoint; the reported figures come from `python -m generator.evaluate`)."""
    from generator.builtin.backend_v3 import BuiltinV3Backend
    from generator.evaluate import analyse, evaluation_prompts

    backend = BuiltinV3Backend(pipeline_dir)
    right = {"colour": [], "shape": [], "direction": [], "once": []}
    for item in evaluation_prompts(count, seed=3):
        frames = backend.generate(GenerationRequest(prompt=item["prompt"], seed=item["seed"], steps=steps)).frames
        found = analyse(frames)
        for key in ("colour", "shape", "direction"):
            right[key].append(found[key] == item[key])
        right["once"].append(found["objects"] == 1)
    return {key: float(np.mean(v)) for key, v in right.items()}


def train(args) -> dict:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    tokenizer = CausalVideoTokenizer.from_pretrained(args.tokenizer).eval().requires_grad_(False).to(device)
    checkpoint_path = os.path.join(args.out, "checkpoint.pt")
    state = {"step": 0, "losses": [], "seconds": 0.0}
    model = ChunkDenoiser(latent_channels=tokenizer.config.latent_channels, patch=args.patch, dim=args.dim,
                          layers=args.layers, heads=args.heads, chunk=args.chunk, context=args.context,
                          start_layout=args.start_layout or bool(args.scene_layout),
                          context_noise=bool(args.context_noise), scene_layout=bool(args.scene_layout),
                          layout_pairs=args.layout_pairs)
    saved = None
    if args.init_from and not (args.resume and os.path.exists(checkpoint_path)):
        # a shipped pipeline folder's denoiser (its EMA weights) as the starting point
        model = ChunkDenoiser.from_pretrained(os.path.join(args.init_from, "denoiser"))
        wanted = {"start_layout": args.start_layout or bool(args.scene_layout),
                  "context_noise": bool(args.context_noise), "scene_layout": bool(args.scene_layout),
                  "layout_pairs": args.layout_pairs}
        missing = {name: True for name, on in wanted.items() if on and not model.config[name]}
        if missing:
            model = ChunkDenoiser.grown(model, **missing)
    if args.resume and os.path.exists(checkpoint_path):
        saved = torch.load(checkpoint_path, weights_only=False, map_location="cpu")
        model = ChunkDenoiser.from_config(saved["config"])
        model.load_state_dict(saved["model"])
        state = saved["state"]
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    if saved is not None:
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        print(f"resumed at step {state['step']}", flush=True)
    cfg = model.config
    rng = random.Random(f"{args.seed}:{state['step']}")
    few_levels = torch.tensor(sample_levels(4))
    deadline = time.time() + args.max_minutes * 60 if args.max_minutes else float("inf")

    def save():
        torch.save({"config": dict(model.config), "model": model.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "state": state}, checkpoint_path + ".tmp")
        os.replace(checkpoint_path + ".tmp", checkpoint_path)
        pipeline_dir = os.path.join(args.out, "pipeline")
        ema.save_pretrained(os.path.join(pipeline_dir, "denoiser"))
        shipped = tokenizer
        if args.decoder:  # a decoder trained on since (train_tokenizer --freeze-encoder): same encoder
            shipped = CausalVideoTokenizer.from_pretrained(args.decoder)
            ours = dict(tokenizer.named_parameters())
            if not all(torch.equal(p.cpu(), ours[n].cpu()) for n, p in shipped.named_parameters()
                       if n.startswith("enc_")):
                raise SystemExit(f"{args.decoder} has another encoder than {args.tokenizer}")
        shipped.save_pretrained(os.path.join(pipeline_dir, "tokenizer"))
        line = {"step": state["step"], "seconds": round(state["seconds"], 1),
                "loss": float(np.mean(state["losses"][-100:]))}
        if args.quality_every and state["step"] % args.quality_every == 0:
            line |= quality(pipeline_dir)
        with open(os.path.join(args.out, "log.jsonl"), "a") as fh:
            fh.write(json.dumps(line) + "\n")
        with open(os.path.join(args.out, "training.json"), "w") as fh:
            json.dump({"step": state["step"], "seconds": state["seconds"], "args": vars(args)}, fh, indent=1)
        print(json.dumps(line), flush=True)

    bar = tqdm(total=args.steps, initial=state["step"], desc="chunk denoiser", unit="step", mininterval=10)
    while state["step"] < args.steps and time.time() < deadline:
        started = time.time()
        frac = state["step"] / max(args.steps, 1)
        lr = args.lr * min(1.0, (state["step"] + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        target, context, context_mask, objects, object_mask, layout, layout_mask = (
            x.to(device) for x in batch(rng, args.batch, tokenizer, cfg.chunk, cfg.context, cfg.max_objects,
                                        args.scene_layout))
        b = target.shape[0]
        level = torch.where(torch.rand(b) < 0.5, torch.rand(b),
                            few_levels[torch.randint(len(few_levels), (b,))]).to(device)
        if args.own_context:
            context = own_context(model, context, context_mask, objects, object_mask, args.own_context,
                                  tokenizer.config.levels)
        context_level = None
        if args.context_noise:
            context, context_level = noised_context(context, context_mask, args.context_noise)
        s = level.view(b, 1, 1, 1, 1)
        noisy = (1 - s) * target + s * torch.randn_like(target)
        predicted = model(noisy, level, objects, object_mask, context, context_mask, layout, layout_mask,
                          context_level)
        loss = (foreground_weights(target, args.foreground_weight) * (predicted - target).pow(2)).mean()
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
    parser.add_argument("--tokenizer", required=True, help="a trained tokenizer folder (save_pretrained)")
    parser.add_argument("--decoder", help="a tokenizer folder with the same encoder whose (newer) decoder the "
                                           "pipeline gets, read again at every checkpoint")
    parser.add_argument("--out", default="runs/causal")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=4, help="latent positions folded into a token, per side")
    parser.add_argument("--dim", type=int, default=160)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--context", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--ckpt-every", type=int, default=250)
    parser.add_argument("--quality-every", type=int, default=500, help="0: no held-out clips per checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-minutes", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--init-from", help="start from this pipeline folder's denoiser (e.g. generator/weights/"
                                            "builtin_v3) instead of random weights")
    parser.add_argument("--own-context", type=float, default=0.0,
                        help="share of the examples whose context frames the network redraws itself (own_context)")
    parser.add_argument("--context-noise", type=float, default=0.0,
                        help="noise the context frames to a level up to this, told to the network (noised_context)")
    parser.add_argument("--scene-layout", type=float, default=0.0,
                        help="share of the continuations given the scene's layout at their first frame, as clips "
                             "made from text get it at every chunk (the denoiser's scene_layout; implies "
                             "--start-layout)")
    parser.add_argument("--start-layout", action="store_true",
                        help="first chunks read a start layout (where each object starts, its size and speed)")
    parser.add_argument("--layout-pairs", action="store_true",
                        help="each object's layout read together with its own token (the denoiser's layout_pairs)")
    parser.add_argument("--foreground-weight", type=float, default=1.0,
                        help="loss weight of the latent positions a shape covers (the background's is 1)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())
