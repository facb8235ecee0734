"""The built-in model v3's chunk-causal denoiser, in the causal tokenizer's latent.

A clip is made chunk after chunk (`chunk` latent frames each, one latent frame per video frame).
Each chunk is denoised in 1-4 steps while attending to the clean latents of up to `context`
frames before it (context frames: the model's own previous output, a start image, or the last
frames of a clip to continue) and to one token per object of the chunk's own prompt, so a prompt
can change at any chunk (CausVid, Yin et al. 2025; Self-Forcing, Huang et al. 2025 for the
chunk-causal setting; here trained directly, not distilled).

Prompt conditioning is the prompt's objects as `text.parse_objects` reads them: per object its
colour, shape, direction, whether it moves, whether it was sped up, and whether this chunk is the
first one after a steer changed it (`steer`): an object moving against its asked direction has
bounced off an edge and keeps going, unless it was just told to turn.

A text-to-video clip's first chunk has nothing before it, so where each object starts (and its
size and speed: what a prompt does not say) is drawn from the seed as a start layout
(`start_layout`). Each of that chunk's tokens reads, per object, where the object is relative to the
token on that frame (moving at its velocity): with the layout known the chunk is one clip, not the
average of every place an object could be, so a step or two draws it sharp. Without `scene_layout`
later chunks find the objects in their context frames only; with it, every chunk of a clip made from
text gets the layout of the scene as the world moves it (`world.Body`: bounces, stops, turns, speed-ups
as the prompt's steers ask), so an object its own flawed frames lost is drawn again where it is.
The layout's first terms are linear in each object's offset and in its token, summed over the objects:
where two objects are near one token the sum no longer says which offset belongs to which shape. With
`layout_pairs` a small MLP also reads each (token, object) pair before the sum.

A live video's context is its own output, whose small errors the renderer's frames never show; fed back
chunk after chunk they compound and the objects melt. With `context_noise` the context frames are
noised during training to a level the network is told (as GameNGen augments its past frames), so it
learns to redraw the objects from what the prompt says rather than copy the context's flaws; sampling
noises the context to `sample_context_level`.

Flow-matching noise: x_s = (1 - s) x0 + s noise, s in [0, 1]; the network predicts x0. A pre-norm
transformer over [object tokens, context tokens, chunk tokens]; latents are folded `patch` x `patch`
into tokens (4: 16x16 -> 4x4 tokens per frame, 128 tokens for 8 frames, few enough for a CPU).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from generator.builtin import world

COLOUR_IDS = {name: i + 1 for i, name in enumerate(world.COLOURS)}  # 0: not said
SHAPE_IDS = {name: i + 1 for i, name in enumerate(world.SHAPES)}
DIRECTION_IDS = {name: i + 1 for i, name in enumerate(world.DIRECTIONS)}
OBJECT_FIELDS = ("colour", "shape", "direction", "stopped", "fast", "steer")
LAYOUT_FIELDS = ("x", "y", "radius", "speed", "vx", "vy")  # 64-pixel canvas units, the chunk's first frame
CANVAS = 64.0


def object_ids(objects: list, max_objects: int) -> tuple:
    """[{colour, shape, direction, stopped, fast, steer}] -> (ids max_objects x 6 long, mask max_objects bool)."""
    ids = torch.zeros(max_objects, len(OBJECT_FIELDS), dtype=torch.long)
    mask = torch.zeros(max_objects, dtype=torch.bool)
    for i, o in enumerate(objects[:max_objects]):
        ids[i] = torch.tensor([COLOUR_IDS.get(o.get("colour"), 0), SHAPE_IDS.get(o.get("shape"), 0),
                               DIRECTION_IDS.get(o.get("direction"), 0), int(bool(o.get("stopped"))),
                               int(bool(o.get("fast"))), int(bool(o.get("steer")))])
        mask[i] = True
    return ids, mask


def layout_rows(layout: list, max_objects: int) -> torch.Tensor:
    """[(x, y, radius, speed, vx, vy)] per object (`world.Body.layout`) -> max_objects x 6 (rows of absent
    objects are zero)."""
    rows = torch.zeros(max_objects, len(LAYOUT_FIELDS))
    for i, row in enumerate(layout[:max_objects]):
        rows[i] = torch.tensor(row, dtype=torch.float32)
    return rows


def noise_embedding(level: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=level.device) / half)
    args = 1000.0 * level.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.proj(out.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class ChunkDenoiser(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, latent_channels: int = 6, latent_size: int = 16, patch: int = 4, dim: int = 160,
                 layers: int = 4, heads: int = 4, chunk: int = 4, context: int = 4, max_objects: int = 3,
                 start_layout: bool = False, context_noise: bool = False, sample_context_level: float = 0.0,
                 scene_layout: bool = False, layout_pairs: bool = False):
        super().__init__()
        tokens_per_frame = (latent_size // patch) ** 2
        self.proj_in = nn.Linear(latent_channels * patch * patch, dim)
        self.space = nn.Parameter(torch.randn(tokens_per_frame, dim) * 0.02)
        self.time = nn.Parameter(torch.randn(context + chunk, dim) * 0.02)  # context frames, then the chunk
        self.clean = nn.Parameter(torch.zeros(dim))  # marks context tokens
        self.noise_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.colour = nn.Embedding(len(COLOUR_IDS) + 1, dim)
        self.shape = nn.Embedding(len(SHAPE_IDS) + 1, dim)
        self.direction = nn.Embedding(len(DIRECTION_IDS) + 1, dim)
        self.flags = nn.Embedding(6, dim)  # (stopped, fast, steer) x (no, yes)
        self.slot = nn.Parameter(torch.randn(max_objects, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm_out = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, latent_channels * patch * patch)
        if start_layout:
            # zero at first: a denoiser trained without layouts starts out unchanged
            self.layout_in = nn.Linear(5, dim)
            self.layout_object = nn.Linear(dim, dim)
            for layer in (self.layout_in, self.layout_object):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            if layout_pairs:
                self.layout_pair = nn.Sequential(nn.Linear(5 + dim, dim), nn.GELU(), nn.Linear(dim, dim))
                nn.init.zeros_(self.layout_pair[-1].weight)
                nn.init.zeros_(self.layout_pair[-1].bias)
        if context_noise:
            self.context_level_in = nn.Linear(dim, dim)  # zero at first, as the layout layers
            nn.init.zeros_(self.context_level_in.weight)
            nn.init.zeros_(self.context_level_in.bias)

    @classmethod
    def grown(cls, model: "ChunkDenoiser", **options) -> "ChunkDenoiser":
        """`model` with the layers of `options` (start_layout, context_noise, layout_pairs) added at zero: it draws
        as it did until they are trained."""
        # (from_config takes `_use_default_values` back to the defaults: only the settings are passed)
        settings = {k: v for k, v in model.config.items() if not k.startswith("_")}
        grown = cls.from_config(dict(settings, **options))
        missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
        if unexpected or not all(name.startswith(("layout_", "context_level_")) for name in missing):
            raise ValueError(f"the weights do not fit a ChunkDenoiser: missing {missing}, unexpected {unexpected}")
        return grown

    def fold(self, latents: torch.Tensor) -> torch.Tensor:
        """B x C x T x S x S -> B x T*(S/p)^2 x C*p*p"""
        b, c, t, s, _ = latents.shape
        p = self.config.patch
        x = latents.view(b, c, t, s // p, p, s // p, p).permute(0, 2, 3, 5, 1, 4, 6)
        return x.reshape(b, t * (s // p) ** 2, c * p * p)

    def unfold(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        b = tokens.shape[0]
        p, c, s = self.config.patch, self.config.latent_channels, self.config.latent_size
        x = tokens.view(b, t, s // p, s // p, c, p, p).permute(0, 4, 1, 2, 5, 3, 6)
        return x.reshape(b, c, t, s, s)

    def layout_tokens(self, layout: torch.Tensor, object_tokens: torch.Tensor, present: torch.Tensor,
                      t: int) -> torch.Tensor:
        """Per chunk token, what the layout puts near it: for each object, the offset of its centre
        from the token's centre on that frame (moving at its velocity), its size and speed, and the
        object itself, weighted by closeness (and with `layout_pairs`, read together). B x t*n x dim."""
        g = self.config.latent_size // self.config.patch
        cell = CANVAS / g
        centres = (torch.arange(g, device=layout.device, dtype=layout.dtype) + 0.5) * cell
        frames = torch.arange(t, device=layout.device, dtype=layout.dtype)
        x, y, radius, speed, vx, vy = layout.unbind(-1)  # B x K
        path_x = x[..., None] + vx[..., None] * frames  # B x K x t
        path_y = y[..., None] + vy[..., None] * frames
        dx = (path_x[..., None, None] - centres.view(1, g)).expand(*path_x.shape, g, g)  # B x K x t x g(y) x g(x)
        dy = (path_y[..., None, None] - centres.view(g, 1)).expand(*path_y.shape, g, g)
        size = radius[..., None, None, None].expand_as(dx)
        gate = (torch.exp(-(dx**2 + dy**2) / (size + cell) ** 2) * present[..., None, None, None])[..., None]
        features = torch.stack([torch.ones_like(dx), dx / cell, dy / cell, size / cell,
                                speed[..., None, None, None].expand_as(dx) / 2.0], dim=-1)
        near = self.layout_in(features * gate) + gate * self.layout_object(object_tokens)[:, :, None, None, None]
        if self.config.layout_pairs:
            # the terms above are linear in each object's offset and in its token, so where two objects
            # are near one token their sum no longer says which offset is whose shape: this reads them together
            each = object_tokens[:, :, None, None, None].expand(*dx.shape, -1)
            near = near + gate * self.layout_pair(torch.cat([features, each], dim=-1))
        return near.sum(1).flatten(1, 3)  # B x t*g*g x dim, in the chunk tokens' order

    def forward(self, noisy: torch.Tensor, level: torch.Tensor, objects: torch.Tensor, object_mask: torch.Tensor,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                layout: torch.Tensor | None = None, layout_mask: torch.Tensor | None = None,
                context_level: torch.Tensor | None = None) -> torch.Tensor:
        """noisy: B x C x chunk x S x S at noise `level` (B); objects: B x K x 6 ids, object_mask: B x K;
        context: B x C x context x S x S clean latents, right-aligned (the last one just before the
        chunk), context_mask: B x context (False for frames not given); layout: B x K x 6
        (`LAYOUT_FIELDS`) at the chunk's first frame, layout_mask: B (False where the example has none);
        context_level: B, the noise level of the context frames (0: clean; read with `context_noise`).
        Returns x0, B x C x chunk x S x S."""
        cfg = self.config
        b, _, t = noisy.shape[:3]
        n = (cfg.latent_size // cfg.patch) ** 2
        if context is None:
            context = noisy.new_zeros(b, cfg.latent_channels, cfg.context, cfg.latent_size, cfg.latent_size)
            context_mask = torch.zeros(b, cfg.context, dtype=torch.bool, device=noisy.device)
        level_emb = self.noise_mlp(noise_embedding(level.expand(b), cfg.dim).to(noisy.dtype))
        chunk_tokens = (self.proj_in(self.fold(noisy)) + self.space.repeat(t, 1)
                        + self.time[cfg.context:cfg.context + t].repeat_interleave(n, 0) + level_emb[:, None])
        context_tokens = (self.proj_in(self.fold(context)) + self.space.repeat(cfg.context, 1)
                          + self.time[:cfg.context].repeat_interleave(n, 0) + self.clean)
        if cfg.context_noise and context_level is not None:
            context_tokens = context_tokens + self.context_level_in(
                noise_embedding(context_level.expand(b), cfg.dim).to(noisy.dtype))[:, None]
        flags = objects[..., 3:] + torch.tensor([0, 2, 4], device=objects.device)
        object_tokens = (self.colour(objects[..., 0]) + self.shape(objects[..., 1]) + self.direction(objects[..., 2])
                         + self.flags(flags).sum(2) + self.slot[: objects.shape[1]])
        if layout is not None and cfg.start_layout:
            present = object_mask & (torch.ones_like(object_mask) if layout_mask is None else layout_mask[:, None])
            chunk_tokens = chunk_tokens + self.layout_tokens(layout.to(noisy.dtype), object_tokens,
                                                             present.to(noisy.dtype), t)
        x = torch.cat([object_tokens, context_tokens, chunk_tokens], dim=1)
        mask = torch.cat([object_mask, context_mask.repeat_interleave(n, 1),
                          torch.ones(b, t * n, dtype=torch.bool, device=noisy.device)], dim=1)
        for block in self.blocks:
            x = block(x, mask)
        out = self.proj_out(self.norm_out(x[:, -t * n:]))
        return torch.tanh(self.unfold(out, t))


def sample_levels(steps: int) -> list:
    """The noise levels a `steps`-step sampling visits, from pure noise (1.0) down."""
    return [1.0 - i / steps for i in range(steps)]
