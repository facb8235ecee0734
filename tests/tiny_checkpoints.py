"""Tiny randomly initialised checkpoints of the REAL diffusers video pipelines, built offline.

Each builder constructs the real component classes (transformer, VAE, scheduler, T5 text
encoder, T5 tokenizer, and for Wan 2.1 I2V a CLIP vision encoder) with tiny sizes — the
constructor arguments follow diffusers' own `get_dummy_components` in
`tests/pipelines/<name>/test_<name>.py` — and `save_pretrained`s the whole pipeline into a
folder laid out exactly like a checkpoint from the Hub (model_index.json + one sub-folder
per component). The service then loads that folder through the same code path as a real
local checkpoint.

The tokenizer is a Unigram T5 tokenizer built in memory (no download): transformers 5
accepts `T5TokenizerFast(vocab=[(piece, score), ...], extra_ids=0)`.
"""
from __future__ import annotations

import os

import torch

WORDS = ("a red green blue white black square circle triangle ball cat dog moving left right up down "
         "over under the sky sea city night day slowly fast camera pan zoom of in on").split()
TEXT_DIM = 32


def tiny_tokenizer():
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0 - i * 0.01) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def tiny_text_encoder(vocab_size: int, umt5: bool = False):
    """A 1-layer T5 encoder (UMT5 for Wan, whose real text encoder is umt5-xxl)."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    torch.manual_seed(0)
    config = config_cls(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1)
    return model_cls(config).eval()


def _text_components(umt5: bool = False):
    tokenizer = tiny_tokenizer()
    return {"tokenizer": tokenizer, "text_encoder": tiny_text_encoder(len(tokenizer), umt5)}


def ltx_pipeline():
    """LTXPipeline with LTX-Video's real compression (32x spatial, 8x temporal: VAE patch_size 4 and
    three space-time downsamplings) but a handful of channels and one transformer block... two, so
    FirstBlockCache can be switched on."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=2, attention_head_dim=8,
                                             cross_attention_dim=16, num_layers=2, caption_channels=TEXT_DIM)
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8),
                                spatio_temporal_scaling=(True, True, True, False),
                                decoder_spatio_temporal_scaling=(True, True, True, False),
                                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
                                patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    scheduler = FlowMatchEulerDiscreteScheduler()
    return LTXPipeline(transformer=transformer, vae=vae, scheduler=scheduler, **_text_components())


def wan_pipeline(image_to_video: bool = False):
    """WanPipeline (T2V) or WanImageToVideoPipeline in the Wan 2.1 I2V layout (36-channel transformer
    input + a CLIP vision image encoder)."""
    from diffusers import (AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline,
                           WanTransformer3DModel)

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=36 if image_to_video else 16, out_channels=16,
                                        text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2,
                                        cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32, image_dim=4 if image_to_video else None)
    if not image_to_video:
        return WanPipeline(transformer=transformer, vae=vae, scheduler=scheduler, **_text_components(umt5=True))
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        intermediate_size=16, patch_size=1))
    image_processor = CLIPImageProcessor(crop_size=32, size=32)
    return WanImageToVideoPipeline(transformer=transformer, vae=vae, scheduler=scheduler,
                                   image_encoder=image_encoder, image_processor=image_processor,
                                   **_text_components(umt5=True))


def cogvideox_pipeline():
    from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline,
                           CogVideoXTransformer3DModel)

    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(num_attention_heads=4, attention_head_dim=8, in_channels=4,
                                              out_channels=4, time_embed_dim=2, text_embed_dim=TEXT_DIM,
                                              num_layers=1, sample_width=2, sample_height=2, sample_frames=9,
                                              patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16)
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3,
                                 down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4,
                                 block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1,
                                 norm_num_groups=2, temporal_compression_ratio=4)
    scheduler = CogVideoXDDIMScheduler()
    return CogVideoXPipeline(transformer=transformer, vae=vae, scheduler=scheduler, **_text_components())


BUILDERS = {
    "ltx": ltx_pipeline,
    "wan": wan_pipeline,
    "wan-i2v": lambda: wan_pipeline(image_to_video=True),
    "cogvideox": cogvideox_pipeline,
}


def save_tiny_checkpoint(kind: str, directory: str) -> str:
    """Build the tiny `kind` pipeline and save it as a full pipeline folder; returns the folder."""
    os.makedirs(directory, exist_ok=True)
    BUILDERS[kind]().save_pretrained(directory)
    return directory
