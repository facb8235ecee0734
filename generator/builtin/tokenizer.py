"""The built-in model's causal video tokenizer (v3): frames in, a small quantized latent, 256x256 out.

Encoder: 64x64 frames (the world's native canvas; larger inputs are area-resized first) ->
16x16 latent, `latent_channels` per position, one latent step per frame. Decoder: that latent
-> 256x256 frames directly (the last stage predicts each 64-grid pixel's 4x4 block of output
pixels, ESPCN-style, Shi et al. 2016).

Causal in time (MAGVIT-v2, Yu et al. 2023): every temporal convolution pads only on the past
side, and normalisation is per frame, so decoded frame t depends on latents 0..t alone. The
encoder reads each frame alone: a frame's latent is the same whatever window it is encoded in
(a start image, the last frames of a clip to continue, a whole source video), which is what the
denoiser's context frames need. Streaming keeps
each causal convolution's last (kernel - 1) inputs (`DecoderCache`): a new latent step is
decoded once, in the time of one frame.

The last `colour_channels` latent channels are not learned: they are each latent position's mean
colour (the 4x4 pixels of the 64 canvas it covers), and the decoder's output is that colour
spread smoothly over the output (bilinear) plus what the network draws. Learned channels and a
plain decoder drew every shape grey or white after 1000 CPU steps, even given the mean colour
(docs/builtin.md); with it as the decoder's base the network only sharpens the outlines.

Lookup-free quantization (LFQ): each latent channel is clipped to [-1, 1] and rounded to
`levels` evenly spaced values, the gradient passing straight through the rounding. The
latent of one frame is then 16 x 16 x `latent_channels` symbols of log2(levels) bits.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

ENCODER_SIZE = 64  # the encoder's input canvas
SPATIAL_DOWN = 4  # 64 -> 16
OUTPUT_SCALE = 4  # decoder: 64-grid -> 256 pixels


def quantize(z: torch.Tensor, levels: int) -> torch.Tensor:
    """Lookup-free quantization: clip to [-1, 1], round to `levels` values, straight-through."""
    z = z.clamp(-1.0, 1.0)
    step = 2.0 / (levels - 1)
    rounded = torch.round((z + 1.0) / step) * step - 1.0
    return z + (rounded - z).detach()


class CausalConv3d(nn.Module):
    """(kt, k, k) convolution padded spatially on both sides and in time only on the past side.
    Inside the tokenizer video is frames-major, B x T x C x H x W, so that every per-frame op sees
    B*T frames without a copy. `past` (B x kt-1 x C x H x W, the previous inputs) replaces the zero
    padding when streaming. Computed as one Conv2d over frames, each with its kt-1 predecessors
    stacked as channels (the Conv3d's weights): PyTorch's CPU Conv3d takes 2-3x as long."""

    def __init__(self, cin: int, cout: int, kernel: tuple = (3, 3, 3)):
        super().__init__()
        self.time_pad = kernel[0] - 1
        self.conv = nn.Conv3d(cin, cout, kernel, padding=(0, kernel[1] // 2, kernel[2] // 2))

    def forward(self, x: torch.Tensor, past: Optional[torch.Tensor] = None) -> tuple:
        if self.time_pad == 0:
            return self._conv_frames(x), None
        if past is None:
            past = x.new_zeros(x.shape[0], self.time_pad, *x.shape[2:])
        padded = torch.cat([past, x], dim=1)
        return self._conv_frames(padded), padded[:, -self.time_pad:]

    def _conv_frames(self, x: torch.Tensor) -> torch.Tensor:
        weight, kt = self.conv.weight, self.conv.kernel_size[0]
        b, t, c, h, w = x.shape
        t_out = t - kt + 1
        stacked = torch.cat([x[:, tau:tau + t_out] for tau in range(kt)], dim=2) if kt > 1 else x
        weight = weight.transpose(1, 2).reshape(weight.shape[0], kt * c, *weight.shape[3:])
        y = F.conv2d(stacked.reshape(b * t_out, kt * c, h, w), weight, self.conv.bias, padding=self.conv.padding[1:])
        return y.view(b, t_out, *y.shape[1:])


class FrameNorm(nn.Module):
    """GroupNorm applied to each frame on its own (a norm over time would leak the future)."""

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _frames(self.norm, x)


class CausalResBlock(nn.Module):
    """norm -> SiLU -> spatial 3x3 -> norm -> SiLU -> causal temporal 3-tap (a 1x1 per frame when not
    `temporal`), plus the input."""

    def __init__(self, channels: int, temporal: bool = True):
        super().__init__()
        self.norm1, self.norm2 = FrameNorm(channels), FrameNorm(channels)
        self.spatial = CausalConv3d(channels, channels, (1, 3, 3))
        self.temporal = CausalConv3d(channels, channels, (3 if temporal else 1, 1, 1))

    def forward(self, x: torch.Tensor, past: Optional[torch.Tensor] = None) -> tuple:
        h, _ = self.spatial(F.silu(self.norm1(x)))
        h, past = self.temporal(F.silu(self.norm2(h)), past)
        return x + h, past


def _frames(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D op to every frame of B x T x C x H x W."""
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.view(b, t, *y.shape[1:])


def _twice_nearest(f: torch.Tensor) -> torch.Tensor:
    """F.interpolate(f, scale_factor=2, mode="nearest") as a broadcast and one copy (a third of its CPU time)."""
    n, c, h, w = f.shape
    return f[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def _bilinear(f: torch.Tensor, factor: int) -> torch.Tensor:
    """F.interpolate(f, scale_factor=factor, mode="bilinear", align_corners=False) as two small
    matrix products (bilinear resizing is separable; a fifth of its CPU time for 16 -> 256)."""
    rows, cols = (_linear_resize_matrix(n, factor, f.device, f.dtype) for n in f.shape[-2:])
    return rows @ f @ cols.T


@functools.lru_cache(maxsize=8)
def _linear_resize_matrix(size: int, factor: int, device, dtype) -> torch.Tensor:
    """(size * factor) x size: row i holds the weights linear resizing gives output i."""
    impulses = torch.eye(size, dtype=torch.float64)[:, None]
    return F.interpolate(impulses, scale_factor=factor, mode="linear", align_corners=False)[:, 0].T.to(device, dtype)


class DecoderCache:
    """The past inputs of each causal convolution of the decoder, for streaming."""

    def __init__(self):
        self.past: dict = {}


class CausalVideoTokenizer(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, latent_channels: int = 6, levels: int = 5, channels: tuple = (24, 48, 64),
                 head_channels: int = 32, colour_channels: int = 3):
        super().__init__()
        c0, c1, c2 = channels
        # encoder 64 -> 32 -> 16
        self.enc_in = CausalConv3d(3, c0, (1, 3, 3))
        self.enc_block0 = CausalResBlock(c0, temporal=False)
        self.enc_down0 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.enc_block1 = CausalResBlock(c1, temporal=False)
        self.enc_down1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.enc_block2 = CausalResBlock(c2, temporal=False)
        self.enc_norm = FrameNorm(c2)
        self.enc_out = CausalConv3d(c2, latent_channels - colour_channels, (1, 1, 1))
        # decoder 16 -> 32 -> 64 (-> 256 by the head)
        self.dec_in = CausalConv3d(latent_channels, c2, (3, 3, 3))
        self.dec_block2 = CausalResBlock(c2)
        self.dec_up1 = nn.Conv2d(c2, c1, 3, padding=1)
        self.dec_block1 = CausalResBlock(c1)
        self.dec_up0 = nn.Conv2d(c1, c0, 3, padding=1)
        self.dec_block0 = CausalResBlock(c0)
        self.dec_norm = FrameNorm(c0)
        self.head = nn.Conv2d(c0, head_channels, 3, padding=1)
        self.head_out = nn.Conv2d(head_channels, 3 * OUTPUT_SCALE**2, 1)

    @property
    def bits_per_frame(self) -> float:
        side = ENCODER_SIZE // SPATIAL_DOWN
        return side * side * self.config.latent_channels * math.log2(self.config.levels)

    def compression_ratio(self, output_size: int = 256) -> float:
        """uint8 RGB bits of an output frame over the latent's bits of that frame."""
        return output_size * output_size * 3 * 8 / self.bits_per_frame

    def encode(self, video: torch.Tensor, quantized: bool = True) -> torch.Tensor:
        """B x 3 x T x H x W in [-1, 1] -> B x C x T x 16 x 16 on the LFQ levels (H, W are
        area-resized to 64 first when they differ)."""
        video = video.transpose(1, 2).contiguous()  # frames-major inside (CausalConv3d)
        if video.shape[-2:] != (ENCODER_SIZE, ENCODER_SIZE):
            video = _frames(lambda f: F.interpolate(f, size=(ENCODER_SIZE, ENCODER_SIZE), mode="area"), video)
        x, _ = self.enc_in(video)
        x, _ = self.enc_block0(x)
        x = _frames(self.enc_down0, F.silu(x))
        x, _ = self.enc_block1(x)
        x = _frames(self.enc_down1, F.silu(x))
        x, _ = self.enc_block2(x)
        z, _ = self.enc_out(F.silu(self.enc_norm(x)))
        z = torch.tanh(z)
        if self.config.colour_channels:  # each position's mean colour, 4x4 pixels of the 64 canvas
            pooled = _frames(lambda f: F.avg_pool2d(f, SPATIAL_DOWN), video)
            z = torch.cat([z, pooled.clamp(-1.0, 1.0)], dim=2)
        z = z.transpose(1, 2)
        return quantize(z, self.config.levels) if quantized else z

    def decode(self, latents: torch.Tensor, cache: Optional[DecoderCache] = None) -> torch.Tensor:
        """B x C x T x 16 x 16 -> B x 3 x T x 256 x 256 in [-1, 1] (not clamped: training wants the
        gradient). With a `cache`, these T steps continue the ones decoded before through it."""
        past = cache.past if cache is not None else {}

        def causal(name, layer, x):
            y, past[name] = layer(x, past.get(name))
            return y

        latents = latents.transpose(1, 2).contiguous()  # frames-major inside (CausalConv3d)
        x = causal("in", self.dec_in, latents)
        x = causal("b2", self.dec_block2, x)
        x = _frames(lambda f: self.dec_up1(_twice_nearest(F.silu(f))), x)
        x = causal("b1", self.dec_block1, x)
        x = _frames(lambda f: self.dec_up0(_twice_nearest(F.silu(f))), x)
        x = causal("b0", self.dec_block0, x)
        x = F.silu(self.dec_norm(x))

        def head(f):
            detail = self.head_out(F.silu(self.head(f)))
            return F.pixel_shuffle(detail, OUTPUT_SCALE)

        out = _frames(head, x)
        if self.config.colour_channels:  # the mean colour, spread smoothly, plus what the network draws
            colour = latents[:, :, -self.config.colour_channels:]
            out = out + _frames(lambda f: _bilinear(f, SPATIAL_DOWN * OUTPUT_SCALE), colour)
        return out.transpose(1, 2)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(video))


@torch.no_grad()
def decode_frames_uint8(tokenizer: CausalVideoTokenizer, latents: torch.Tensor,
                        cache: Optional[DecoderCache] = None):
    """C x T x 16 x 16 -> T x 256 x 256 x 3 uint8 (numpy). In place on the decoded frames, then
    permuted as bytes: the float passes were a fifth of a streamed frame's decode time."""
    video = tokenizer.decode(latents[None].to(tokenizer.device), cache)[0]
    pixels = video.clamp_(-1.0, 1.0).add_(1.0).mul_(127.5).round_().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).contiguous().cpu().numpy()
