"""The built-in video denoiser: a factorised space-time U-Net with timestep and text conditioning.

Pixels are folded 4x4 into channels first (64x64 -> 16x16 tokens of 48 channels), so all
convolutions run at 16x16 and below. Each residual block has a 3x3 spatial conv, a
3-tap temporal conv and FiLM from (timestep + pooled text) embeddings; attention blocks
add temporal self-attention and cross-attention to the prompt's token states; the
4x4 bottleneck attends over all of space-time. Optional image conditioning: a start
frame (and a mask of which frames are given) is concatenated to the input, so one
network does text-to-video and image-to-video. With `object_tokens` every attention block also
attends to one state per object the prompt describes (`text.object_phrases`): a two-object
prompt's colour, shape and direction stay bound to their object. Predicts the clean clip (x0).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int = 16):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.spatial = nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1))
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.temporal = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0))
        nn.init.zeros_(self.temporal.weight)
        nn.init.zeros_(self.temporal.bias)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.spatial(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.temporal(F.silu(h))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention through torch's SDPA; keys from `context` when given."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.norm(x)
        q = self.to_q(h)
        k, v = self.to_kv(h if context is None else context).chunk(2, dim=-1)
        split = lambda t: t.view(b, -1, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
        return x + self.out(out.transpose(1, 2).reshape(b, n, d))


class SpaceTimeAttention(nn.Module):
    """Self-attention (over time only, or over all of space-time), cross-attention to the text's
    tokens, then (with `objects`) to its object states, one per described object."""

    def __init__(self, dim: int, text_dim: int, heads: int, full: bool, objects: bool = False):
        super().__init__()
        self.full = full
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads, context_dim=text_dim)
        self.object_attn = Attention(dim, heads, context_dim=text_dim) if objects else None

    def forward(self, x, text_states, text_mask, object_states=None, object_mask=None):
        b, c, t, h, w = x.shape
        if self.full:
            seq = x.permute(0, 2, 3, 4, 1).reshape(b, t * h * w, c)
            seq = self.self_attn(seq)
        else:
            seq = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
            seq = self.self_attn(seq)
            seq = seq.view(b, h, w, t, c).permute(0, 3, 1, 2, 4).reshape(b, t * h * w, c)
        seq = self.cross_attn(seq, text_states, text_mask)
        if self.object_attn is not None:
            seq = self.object_attn(seq, object_states, object_mask)
        return seq.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class VideoUNet(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, patch_size: int = 4, image_channels: int = 3, channels: tuple = (64, 128, 256),
                 emb_dim: int = 256, text_dim: int = 384, heads: int = 4, object_tokens: bool = False):
        super().__init__()
        c0, c1, c2 = channels
        patch_channels = image_channels * patch_size**2
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text_proj = nn.Linear(text_dim, emb_dim)
        # noisy video + start-frame video + mask of given frames
        self.conv_in = nn.Conv3d(2 * patch_channels + 1, c0, 1)
        self.down0 = ResBlock(c0, c0, emb_dim)
        self.pool0 = nn.Conv3d(c0, c0, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.down1 = ResBlock(c0, c1, emb_dim)
        self.attn_down1 = SpaceTimeAttention(c1, text_dim, heads, full=False, objects=object_tokens)
        self.pool1 = nn.Conv3d(c1, c1, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.mid1 = ResBlock(c1, c2, emb_dim)
        self.attn_mid = SpaceTimeAttention(c2, text_dim, heads, full=True, objects=object_tokens)
        self.mid2 = ResBlock(c2, c2, emb_dim)
        self.unpool1 = nn.Conv3d(c2, c1, 1)
        self.up1 = ResBlock(c1, c1, emb_dim)
        self.attn_up1 = SpaceTimeAttention(c1, text_dim, heads, full=False, objects=object_tokens)
        self.unpool0 = nn.Conv3d(c1, c0, 1)
        self.up0 = ResBlock(c0, c0, emb_dim)
        self.norm_out = nn.GroupNorm(16, c0)
        self.conv_out = nn.Conv3d(c0, patch_channels, (1, 3, 3), padding=(0, 1, 1))
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    # (B, C, T, H, W) <-> (B, C*p*p, T, H/p, W/p)
    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = video.shape
        frames = F.pixel_unshuffle(video.transpose(1, 2).reshape(b * t, c, h, w), self.config.patch_size)
        return frames.view(b, t, *frames.shape[1:]).transpose(1, 2)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = tokens.shape
        frames = F.pixel_shuffle(tokens.transpose(1, 2).reshape(b * t, c, h, w), self.config.patch_size)
        return frames.view(b, t, *frames.shape[1:]).transpose(1, 2)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor, text_states: torch.Tensor,
                text_mask: torch.Tensor, text_pooled: torch.Tensor, object_states: torch.Tensor | None = None,
                object_mask: torch.Tensor | None = None, cond_video: torch.Tensor | None = None,
                cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """sample, cond_video: B x 3 x T x H x W; cond_mask: B x 1 x T x 1 x 1 (1 where a frame is
        given); the text arguments are what `TextEncoder` returns, in its order."""
        b, _, t, h, w = sample.shape
        if cond_video is None:
            cond_video = torch.zeros_like(sample)
            cond_mask = sample.new_zeros(b, 1, t, 1, 1)
        p = self.config.patch_size
        mask = cond_mask.expand(b, 1, t, h // p, w // p)
        x = torch.cat([self.patchify(sample), self.patchify(cond_video * cond_mask), mask], dim=1)

        emb = timestep_embedding(timesteps.to(sample.device).expand(b), self.config.emb_dim).to(sample.dtype)
        emb = self.time_mlp(emb) + self.text_proj(text_pooled)

        text = (text_states, text_mask, object_states, object_mask)
        x = self.conv_in(x)
        skip0 = x = self.down0(x, emb)
        x = self.down1(self.pool0(x), emb)
        skip1 = x = self.attn_down1(x, *text)
        x = self.mid1(self.pool1(x), emb)
        x = self.attn_mid(x, *text)
        x = self.mid2(x, emb)
        x = F.interpolate(self.unpool1(x), scale_factor=(1, 2, 2), mode="nearest") + skip1
        x = self.attn_up1(self.up1(x, emb), *text)
        x = F.interpolate(self.unpool0(x), scale_factor=(1, 2, 2), mode="nearest") + skip0
        x = self.up0(x, emb)
        return self.unpatchify(self.conv_out(F.silu(self.norm_out(x))))


class FrameUpsampler(ModelMixin, ConfigMixin):
    """Learned `scale`x upscaling of each frame (ESPCN-style, Shi et al. 2016): one `kernel` x
    `kernel` convolution reads each native pixel's neighbourhood, 1x1 layers (an MLP per pixel:
    large matrix products, which a CPU runs far faster than narrow 3x3 stacks) predict its
    `scale` x `scale` block of output pixels, folded out by pixel_shuffle over a nearest-neighbour
    copy of the input. Trained on the world's renderer at both sizes
    (`generator.builtin.train_upsampler`): bicubic + unsharp mask leaves a 64 -> 256 edge about
    half as steep as the renderer draws it at 256."""

    @register_to_config
    def __init__(self, scale: int = 4, kernel: int = 5, hidden: int = 64, layers: int = 1):
        super().__init__()
        self.conv_in = nn.Conv2d(3, hidden, kernel, padding=kernel // 2, padding_mode="replicate")
        self.body = nn.ModuleList(nn.Conv2d(hidden, hidden, 1) for _ in range(layers))
        self.conv_out = nn.Conv2d(hidden, 3 * scale**2, 1)
        nn.init.zeros_(self.conv_out.weight)  # starts as the nearest-neighbour copy
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """N x 3 x h x w in [-1, 1] -> N x 3 x (scale h) x (scale w)."""
        h = F.silu(self.conv_in(frames))
        for layer in self.body:
            h = F.silu(layer(h))
        detail = F.pixel_shuffle(self.conv_out(h), self.config.scale)
        return F.interpolate(frames, scale_factor=self.config.scale, mode="nearest") + detail

    def upscale_video(self, video: torch.Tensor) -> torch.Tensor:
        """3 x T x h x w -> 3 x T x (scale h) x (scale w), clamped to [-1, 1]."""
        return self(video.transpose(0, 1)).clamp(-1, 1).transpose(0, 1)
