"""Tiny randomly initialised checkpoints of the REAL diffusers video pipelines, built offline.

Each builder constructs the real component classes (transformer, VAE, scheduler, text encoders,
tokenizers, image encoders, LTX-2's audio VAE and vocoder) with tiny sizes — the constructor
arguments follow diffusers' own `get_dummy_components` in `tests/pipelines/<name>/test_<name>.py` —
and `save_pretrained`s the whole pipeline into a folder laid out exactly like a checkpoint from the
Hub (model_index.json + one sub-folder per component). The service then loads that folder through
the same code path as a real local checkpoint.

No tokenizer is downloaded: T5/UMT5 use a Unigram vocabulary built in memory
(`T5TokenizerFast(vocab=[(piece, score), ...], extra_ids=0)`), Gemma (LTX-2) and Qwen2
(HunyuanVideo 1.5) a word-level BPE vocabulary with no merges, ByT5 needs no vocabulary at all.
Sizes stay small because on CPU the token count is what costs (docs: FACTS.md).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

import pytest
import torch

WORDS = ("a red green blue white black square circle triangle ball cat dog moving left right up down "
         "over under the sky sea city night day slowly fast camera pan zoom of in on").split()
TEXT_DIM = 32


def responsive(module, gain: float = 2.0):
    """Scale every convolution's weights by `gain`. A tiny VAE at its default init shrinks its
    signal in each layer: its encoder maps any two videos to latents ~1% apart and its decoder any
    two latents to frames ~1 grey level apart, so which input a pipeline got was decided by float
    noise surviving uint8 rounding (CPU-dependent). At 2x, two inputs differ by tens of levels."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Conv3d)):
                layer.weight.mul_(gain)
    return module


def attentive(transformer, gain: float = 3.0):
    """Scale the video self-attention's value and output projections by `gain` (its output by gain^2). A
    tiny transformer at its default init adds little of what that attention gathers to its residual
    stream: reference tokens appended to the sequence (LTX-2's IC-LoRA control) moved the frames by 0.3 grey
    levels on average; at 3x, by 7."""
    with torch.no_grad():
        for block in transformer.transformer_blocks:
            block.attn1.to_v.weight.mul_(gain)
            block.attn1.to_out[0].weight.mul_(gain)
    return transformer


# ------------------------------------------------------------------ text encoders and tokenizers
def tiny_tokenizer():
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0 - i * 0.01) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def _bpe_vocab(specials: list, space: str) -> dict:
    """Special tokens, then whole words (with the tokenizer's word-start marker), then letters."""
    vocab = {tok: i for i, tok in enumerate(specials)}
    for piece in [space + w for w in WORDS] + list("abcdefghijklmnopqrstuvwxyz") + [space]:
        vocab.setdefault(piece, len(vocab))
    return vocab


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


def _gemma3_text():
    """LTX-2's prompt encoder: Gemma 3 (a two-layer one, hidden 32) with a Gemma tokenizer."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, GemmaTokenizer

    tokenizer = GemmaTokenizer(vocab=_bpe_vocab(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], "\u2581"), merges=[])
    torch.manual_seed(0)
    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
                            max_position_embeddings=64)
    config = Gemma3Config(text_config=text.to_dict(), mm_tokens_per_image=4,
                          vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=16, patch_size=8))
    return tokenizer, Gemma3ForConditionalGeneration(config).eval()


# ------------------------------------------------------------------ LTX-Video 0.9.x
def _ltx_components():
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=2, attention_head_dim=8,
                                             cross_attention_dim=16, num_layers=2, caption_channels=TEXT_DIM)
    torch.manual_seed(0)
    vae = responsive(AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8),
                                spatio_temporal_scaling=(True, True, True, False),
                                decoder_spatio_temporal_scaling=(True, True, True, False),
                                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
                                patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False))
    responsive(vae.encoder)  # 4x in all: 32x32 frames are one latent pixel, whose values must still differ
    return dict(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), **_text_components())


def ltx_pipeline():
    """LTXPipeline with LTX-Video's real compression (32x spatial, 8x temporal: VAE patch_size 4 and
    three space-time downsamplings) but a handful of channels and two transformer blocks (so
    FirstBlockCache can be switched on)."""
    from diffusers import LTXPipeline

    return LTXPipeline(**_ltx_components())


def ltx_condition_pipeline():
    """LTX-Video 0.9.5+ as its condition pipeline (frames or clips at chosen positions, editing)."""
    from diffusers import LTXConditionPipeline

    return LTXConditionPipeline(**_ltx_components())


def ltx_upsampler_pipeline():
    """The spatial latent upsampler (x2) for the tiny LTX: a pipeline folder of its own with the same VAE,
    as `Lightricks/ltxv-spatial-upscaler-0.9.7` ships."""
    from diffusers import LTXLatentUpsamplePipeline
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    vae = _ltx_components()["vae"]
    torch.manual_seed(0)
    upsampler = LTXLatentUpsamplerModel(in_channels=8, mid_channels=32, num_blocks_per_stage=1)
    return LTXLatentUpsamplePipeline(vae=vae, latent_upsampler=upsampler)


# ------------------------------------------------------------------ LTX-2 (video + audio)
def _ltx2_components():
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    tokenizer, text_encoder = _gemma3_text()
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=TEXT_DIM, rope_double_precision=False, rope_type="split")
    attentive(transformer)
    torch.manual_seed(0)
    # LTX-2.0 connectors: their width (heads x head_dim) is the text encoder's hidden size
    connectors = LTX2TextConnectors(
        caption_channels=TEXT_DIM, text_proj_in_factor=text_encoder.config.text_config.num_hidden_layers + 1,
        video_connector_num_attention_heads=4, video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split")
    torch.manual_seed(0)
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False)
    torch.manual_seed(0)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8)
    torch.manual_seed(0)
    # 100 mel frames per second (16 kHz / hop 160) upsampled 4 x 4 x 5 = 80x: 8 kHz stereo, so the track
    # is as long as the video, as with the real vocoder (24 kHz from the same mel rate)
    vocoder = LTX2Vocoder(in_channels=audio_vae.config.output_channels * audio_vae.config.mel_bins, hidden_channels=32,
                          out_channels=2, upsample_kernel_sizes=[8, 8, 10], upsample_factors=[4, 4, 5],
                          resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1,
                          output_sampling_rate=8000)
    return dict(transformer=transformer, vae=vae, audio_vae=audio_vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                text_encoder=text_encoder, tokenizer=tokenizer, connectors=connectors, vocoder=vocoder)


def ltx2_pipeline():
    from diffusers import LTX2Pipeline

    return LTX2Pipeline(**_ltx2_components())


def ltx2_dfr_pipeline():
    """LTX-2.5's DFR pass: the LTX-2 parts, with the transformer's keyframe position embedding (its slots)."""
    from diffusers import LTX2DFRPipeline, LTX2VideoTransformer3DModel

    components = _ltx2_components()
    settings = {k: v for k, v in components["transformer"].config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    components["transformer"] = attentive(LTX2VideoTransformer3DModel(
        **dict(settings, use_keyframes_abs_pos_embedding=True)))
    return LTX2DFRPipeline(**components)


def ltx2_upsampler_pipeline():
    from diffusers import LTX2LatentUpsamplePipeline
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel

    vae = _ltx2_components()["vae"]
    torch.manual_seed(0)
    upsampler = LTX2LatentUpsamplerModel(in_channels=4, mid_channels=32, num_blocks_per_stage=1)
    return LTX2LatentUpsamplePipeline(vae=vae, latent_upsampler=upsampler)


def ltx2_temporal_upsampler():
    """LTX-2.5's temporal latent upsampler (x2 in time: F latent frames -> 2F - 1), as the model folder alone."""
    from diffusers.pipelines.ltx2 import LTX2LatentUpsamplerModel

    torch.manual_seed(0)
    return LTX2LatentUpsamplerModel(in_channels=4, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                    spatial_upsample=False, temporal_upsample=True)


def ltx2_decoder_pipeline():
    """LTX-2.5's diffusion decoder for the tiny LTX-2 (4 latent channels, 2x spatial and 2x temporal
    compression: one x2-in-time upsampling stage, then 2x2 pixel patches), as a pipeline folder whose
    `diffusion_decoder` sub-folder is the model alone (the decoder's other form). Neighborhood attention runs
    on FlexAttention, which on CPU materialises every token pair's score: one head, 1x3x3 and 3x3x3 windows
    and patches of 2x2 px keep a 9-frame 32x32 decode near 0.25 s (1x1 px patches: 15 s)."""
    from diffusers import (FlowMatchEulerDiscreteScheduler, LTX2VideoDiffusionDecodePipeline,
                           LTX2VideoDiffusionDecoderModel)

    torch.manual_seed(0)
    decoder = LTX2VideoDiffusionDecoderModel(
        latent_channels=4, patch_size=2, decoder_head_dim=8, decoder_stage_channels=(8, 8), decoder_stage_depths=(1, 1),
        decoder_stage_kernels=((1, 3, 3),), decoder_upsample_strides=((2, 1, 1),),
        decoder_upsample_channel_reductions=(1,), decoder_stage5_kernel=(3, 3, 3), decoder_t_emb_dim=16,
        spatial_compression_ratio=2, temporal_compression_ratio=2)
    return LTX2VideoDiffusionDecodePipeline(diffusion_decoder=decoder, scheduler=FlowMatchEulerDiscreteScheduler())


# ------------------------------------------------------------------ Wan 2.1 / 2.2 / VACE, SkyReels-V2
def _wan_vae(wan22: bool = False):
    return responsive(_wan_vae_default_init(wan22))


def _wan_vae_default_init(wan22: bool = False):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    if wan22:  # Wan 2.2's 16x16x4 VAE: pixels patchified 2x2 first, 48 latent channels
        return AutoencoderKLWan(base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                                latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1],
                                num_res_blocks=1, scale_factor_spatial=16, scale_factor_temporal=4,
                                temperal_downsample=[False, True, True])
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def _wan_transformer(in_channels=16, out_channels=16, cls=None, **extra):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    return (cls or WanTransformer3DModel)(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
        out_channels=out_channels, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, **extra)


def wan_pipeline(image_to_video: bool = False):
    """WanPipeline (T2V) or WanImageToVideoPipeline in the Wan 2.1 I2V layout (36-channel transformer
    input + a CLIP vision image encoder)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline

    vae, scheduler = _wan_vae(), FlowMatchEulerDiscreteScheduler(shift=3.0)
    transformer = _wan_transformer(in_channels=36 if image_to_video else 16,
                                   image_dim=4 if image_to_video else None)
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


def chronoedit_pipeline():
    """ChronoEditPipeline: Wan 2.1 I2V's layout (36-channel transformer input, a CLIP vision image encoder) with
    ChronoEdit's transformer (its rotary embedding can skip the reasoning frames) and Wan's UniPC scheduler (temporal
    reasoning trims its stored model outputs)."""
    from diffusers import ChronoEditPipeline, ChronoEditTransformer3DModel, UniPCMultistepScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=4, projection_dim=4, num_hidden_layers=2,
                                                     num_attention_heads=2, image_size=32, intermediate_size=16,
                                                     patch_size=1))
    return ChronoEditPipeline(transformer=_wan_transformer(36, 16, cls=ChronoEditTransformer3DModel, image_dim=4),
                              vae=_wan_vae(), scheduler=UniPCMultistepScheduler(
                                  prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0),
                              image_encoder=image_encoder, image_processor=CLIPImageProcessor(crop_size=32, size=32),
                              **_text_components(umt5=True))


def wan22_ti2v_pipeline():
    """Wan 2.2 TI2V-5B's layout: one transformer on the 48-channel latents of the 16x VAE that does
    text- and image-to-video (`expand_timesteps`: the start image is latent frame 0, kept clean)."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(transformer=_wan_transformer(48, 48), vae=_wan_vae(wan22=True), scheduler=scheduler,
                       expand_timesteps=True, **_text_components(umt5=True))


def wan22_a14b_pipeline():
    """Wan 2.2 A14B's layout: two experts (`transformer` for high noise, `transformer_2` below the
    boundary) switched at `boundary_ratio`."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    transformer_2 = _wan_transformer()
    torch.nn.init.normal_(transformer_2.proj_out.weight, std=0.5)  # an expert that differs from the first
    return WanPipeline(transformer=_wan_transformer(), transformer_2=transformer_2, boundary_ratio=0.875,
                       vae=_wan_vae(), scheduler=scheduler, **_text_components(umt5=True))


def lucy_edit_pipeline():
    """LucyEditPipeline on Wan 2.2 TI2V-5B's layout: the source video's 48 latent channels are appended to
    the noisy latents' 48 (a 96-channel transformer input)."""
    from diffusers import LucyEditPipeline, UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return LucyEditPipeline(transformer=_wan_transformer(96, 48), vae=_wan_vae(wan22=True), scheduler=scheduler,
                            expand_timesteps=True, **_text_components(umt5=True))


def wan_vace_pipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel

    transformer = _wan_transformer(cls=WanVACETransformer3DModel, vace_layers=[0, 1], vace_in_channels=96)
    return WanVACEPipeline(transformer=transformer, vae=_wan_vae(),
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), **_text_components(umt5=True))


def wan_animate_pipeline():
    """WanAnimatePipeline (Wan 2.2 Animate's layout): a 36-channel Wan transformer (noisy latents + the
    character's and the previous segment's latents + mask) with pose latents, a motion encoder on 16 x 16 face
    frames and a face adapter in every block; a CLIP vision image encoder."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanAnimatePipeline, WanAnimateTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    transformer = WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, latent_channels=16,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", image_dim=4, rope_max_seq_len=32,
        motion_encoder_channel_sizes={"4": 8, "8": 8, "16": 8}, motion_encoder_size=16, motion_style_dim=8,
        motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
        inject_face_latents_blocks=1, motion_encoder_batch_size=4)
    torch.manual_seed(0)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=4, projection_dim=4, num_hidden_layers=2,
                                                     num_attention_heads=2, image_size=32, intermediate_size=16,
                                                     patch_size=1))
    return WanAnimatePipeline(transformer=transformer, vae=_wan_vae(),
                              scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), image_encoder=image_encoder,
                              image_processor=CLIPImageProcessor(crop_size=32, size=32), **_text_components(umt5=True))


def skyreels_v2_pipeline():
    """SkyReels-V2 diffusion forcing (one checkpoint serves its T2V, I2V and V2V pipelines)."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Transformer3DModel, UniPCMultistepScheduler

    transformer = _wan_transformer(cls=SkyReelsV2Transformer3DModel)
    scheduler = UniPCMultistepScheduler(flow_shift=5.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    return SkyReelsV2DiffusionForcingPipeline(transformer=transformer, vae=_wan_vae(), scheduler=scheduler,
                                              **_text_components(umt5=True))


# ------------------------------------------------------------------ Helios (chunk-causal, history latents)
def _helios_components(stages: int):
    from diffusers import HeliosScheduler, HeliosTransformer3DModel

    torch.manual_seed(0)
    transformer = HeliosTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_dim=(4, 4, 4), has_multi_term_memory_patch=True,
        guidance_cross_attn=True, zero_history_timestep=True, is_amplify_history=False)
    # At its default init the history (the earlier chunks' latents, seen only through self-attention) moved
    # the next chunk by ~0.3 grey levels: the history patch embeddings and the self-attention's values and
    # output are scaled 8x so that what a chunk continues from decides its frames by whole grey levels.
    with torch.no_grad():
        for name, weight in transformer.named_parameters():
            if name.startswith(("patch_short", "patch_mid", "patch_long")) or (
                    ".attn1.to_v." in name or ".attn1.to_out.") and name.endswith("weight"):
                weight.mul_(8.0)
    scheduler = HeliosScheduler(stages=stages, stage_range=[i / stages for i in range(stages + 1)],
                                use_dynamic_shifting=True)
    return dict(transformer=transformer, vae=_wan_vae(), scheduler=scheduler, **_text_components(umt5=True))


def helios_pipeline():
    """HeliosPipeline (Helios-Base's layout): Wan's VAE, a UMT5 prompt encoder, one denoising stage."""
    from diffusers import HeliosPipeline

    return HeliosPipeline(**_helios_components(stages=1))


def helios_pyramid_pipeline():
    """HeliosPyramidPipeline (Helios-Mid / Distilled's layout): three resolution stages per chunk."""
    from diffusers import HeliosPyramidPipeline

    return HeliosPyramidPipeline(**_helios_components(stages=3))


def helios_distilled_pipeline():
    """HeliosPyramidPipeline as Helios-Distilled ships: `is_distilled` and the DMD scheduler."""
    from diffusers import HeliosDMDScheduler, HeliosPyramidPipeline

    parts = _helios_components(stages=3)
    parts["scheduler"] = HeliosDMDScheduler(use_dynamic_shifting=True)
    return HeliosPyramidPipeline(**parts, is_distilled=True)


# ------------------------------------------------------------------ Sana Video
def sana_video_pipeline(image_to_video: bool = False):
    """SanaVideoPipeline / SanaImageToVideoPipeline (one checkpoint serves both): Wan's VAE, a Gemma 2
    prompt encoder, the linear-attention SanaVideoTransformer3DModel."""
    from diffusers import (FlowMatchEulerDiscreteScheduler, SanaImageToVideoPipeline, SanaVideoPipeline,
                           SanaVideoTransformer3DModel)
    from transformers import Gemma2Config, Gemma2Model, GemmaTokenizer

    tokenizer = GemmaTokenizer(vocab=_bpe_vocab(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], "\u2581"), merges=[])
    torch.manual_seed(0)
    text_encoder = Gemma2Model(Gemma2Config(head_dim=16, hidden_size=8, intermediate_size=64, num_attention_heads=2,
                                            num_hidden_layers=1, num_key_value_heads=2, vocab_size=len(tokenizer),
                                            max_position_embeddings=512, attn_implementation="eager")).eval()
    torch.manual_seed(0)
    transformer = SanaVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=8,
        mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=8, patch_size=(1, 2, 2),
        norm_elementwise_affine=False, norm_eps=1e-6, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    cls = SanaImageToVideoPipeline if image_to_video else SanaVideoPipeline
    return cls(transformer=transformer, vae=_wan_vae(), scheduler=FlowMatchEulerDiscreteScheduler(),
               text_encoder=text_encoder, tokenizer=tokenizer)


# ------------------------------------------------------------------ Motif-Video
def motif_video_pipeline():
    """MotifVideoPipeline (its I2V pipeline shares the checkpoint): Wan's VAE, a T5Gemma 2 encoder with a
    SigLIP vision tower, a 33-channel transformer input (latents + image latents + mask)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, MotifVideoPipeline
    from diffusers.guiders import AdaptiveProjectedGuidance
    from diffusers.models.transformers.transformer_motif_video import MotifVideoTransformer3DModel
    from transformers import (SiglipImageProcessor, SiglipVisionConfig, T5Gemma2Encoder, T5Gemma2EncoderConfig,
                              T5Gemma2TextConfig)

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    text_encoder = T5Gemma2Encoder(T5Gemma2EncoderConfig(
        text_config=T5Gemma2TextConfig(hidden_size=TEXT_DIM, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=128,
                                       head_dim=16, num_key_value_heads=2, dropout_rate=0.0),
        vision_config=SiglipVisionConfig(hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, image_size=16, patch_size=4, num_channels=3))).eval()
    feature_extractor = SiglipImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                             size={"height": 16, "width": 16})
    torch.manual_seed(0)
    transformer = MotifVideoTransformer3DModel(
        in_channels=33, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=1,
        num_single_layers=1, mlp_ratio=4.0, patch_size=1, patch_size_t=1, qk_norm="rms_norm", text_embed_dim=TEXT_DIM,
        image_embed_dim=4, rope_axes_dim=(4, 4, 4))
    return MotifVideoPipeline(transformer=transformer, vae=_wan_vae(),
                              scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder=text_encoder,
                              tokenizer=tokenizer, guider=AdaptiveProjectedGuidance(),
                              feature_extractor=feature_extractor)


# ------------------------------------------------------------------ HunyuanVideo 1.5
# Qwen2's chat layout, which HunyuanVideo 1.5 formats its prompts with (apply_chat_template)
QWEN_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def hunyuan15_pipeline(image_to_video: bool = False):
    """HunyuanVideo 1.5 (T2V, or I2V with a SigLIP image encoder): Qwen2.5-VL + ByT5 prompt encoders."""
    from diffusers import (AutoencoderKLHunyuanVideo15, FlowMatchEulerDiscreteScheduler,
                           HunyuanVideo15ImageToVideoPipeline, HunyuanVideo15Pipeline,
                           HunyuanVideo15Transformer3DModel)
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, Qwen2Tokenizer, T5Config, \
        T5EncoderModel

    torch.manual_seed(0)
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=32,
        image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=32, task_type="i2v" if image_to_video else "t2v")
    torch.manual_seed(0)
    vae = AutoencoderKLHunyuanVideo15(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16),
                                      layers_per_block=1, spatial_compression_ratio=4, temporal_compression_ratio=2,
                                      downsample_match_channel=False, upsample_match_channel=False)
    torch.manual_seed(0)
    text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
        rope_theta=1000000.0)).eval()
    tokenizer = Qwen2Tokenizer(vocab=_bpe_vocab(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "\u0120"), merges=[])
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE  # the pipeline wraps prompts in a system message
    tokenizer_2 = ByT5Tokenizer()
    torch.manual_seed(0)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=1,
                                             num_heads=4, relative_attention_num_buckets=8)).eval()
    parts = dict(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                 text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                 tokenizer_2=tokenizer_2, guider=ClassifierFreeGuidance(guidance_scale=6.0))
    if not image_to_video:
        return HunyuanVideo15Pipeline(**parts)
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    image_encoder = SiglipVisionModel(SiglipVisionConfig(hidden_size=12, intermediate_size=16, num_hidden_layers=1,
                                                         num_attention_heads=2, image_size=32, patch_size=8)).eval()
    feature_extractor = SiglipImageProcessor(size={"height": 32, "width": 32})
    return HunyuanVideo15ImageToVideoPipeline(image_encoder=image_encoder, feature_extractor=feature_extractor, **parts)


# ------------------------------------------------------------------ FramePack (HunyuanVideo, sections)
def framepack_pipeline():
    """HunyuanVideoFramepackPipeline (FramePackI2V_HY's and F1's layout: one checkpoint, the sampling order is
    a call argument): HunyuanVideo's VAE (8x space, 4x time), the FramePack transformer with its history
    embedder and SigLIP image projection, a Llama prompt encoder and CLIP's pooled one. The tokenizers are
    letter-level (no merges): the Llama prompt template is longer than its crop there, so in this tiny
    checkpoint the prompt reaches the transformer through CLIP's pooled embedding."""
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoFramepackPipeline,
                           HunyuanVideoFramepackTransformer3DModel)
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, LlamaConfig, LlamaModel, LlamaTokenizerFast,
                              SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel)

    torch.manual_seed(0)
    transformer = HunyuanVideoFramepackTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=16, pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4), has_image_proj=True, image_proj_dim=12, has_clean_x_embedder=True)
    torch.manual_seed(0)
    vae = responsive(AutoencoderKLHunyuanVideo(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4))
    tokenizer = LlamaTokenizerFast(vocab=_bpe_vocab(["<unk>", "<s>", "</s>", "<pad>"], "\u2581"), merges=[],
                                   pad_token="<pad>")
    torch.manual_seed(0)
    text_encoder = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                          head_dim=4, max_position_embeddings=256)).eval()
    letters = "abcdefghijklmnopqrstuvwxyz"  # CLIP's BPE marks a word's last letter with </w>
    tokenizer_2 = CLIPTokenizer(vocab={piece: i for i, piece in enumerate(
        ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)])}, merges=[])
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer_2), hidden_size=8, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()
    torch.manual_seed(0)
    image_encoder = SiglipVisionModel(SiglipVisionConfig(hidden_size=12, intermediate_size=16, num_hidden_layers=1,
                                                         num_attention_heads=2, image_size=32, patch_size=8)).eval()
    return HunyuanVideoFramepackPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, image_encoder=image_encoder,
        feature_extractor=SiglipImageProcessor(size={"height": 32, "width": 32}))


# ------------------------------------------------------------------ Kandinsky 6 (video + sound)
def kandinsky6_pipeline():
    """Kandinsky6TI2VAPipeline: the fused video/audio transformer, HunyuanVideo's VAE, a Qwen2.5-VL prompt encoder
    with a Qwen2 tokenizer (the published checkpoint names Qwen2_5_VLProcessor, which transformers cannot build
    without torchvision: see PUBLISHED_LAYOUT), CLIP's pooled embedding, an MMAudio VAE and vocoder (8 kHz mono,
    hop 64 = 4 x 4 x 4). A start image reaches the clip only through self-attention to its extra latent frame:
    at the default init the image moved the frames by 0.02 grey levels (its token-type embedding drowned it), so
    that embedding is scaled 0.1x and the patch embedding, self-attention values and outputs 8x (7 levels)."""
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, Kandinsky6TI2VAPipeline,
                           Kandinsky6Transformer3DModel, MMAudioVAE, MMAudioVocoder)
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTokenizer, Qwen2_5_VLConfig,
                              Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer)

    torch.manual_seed(0)
    transformer = Kandinsky6Transformer3DModel(
        in_visual_dim=4, out_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, model_dim=24, ff_dim=32,
        num_text_blocks=1, num_visual_blocks=1, axes_dims=(4, 4, 4), in_audio_dim=4, out_audio_dim=4,
        text_token_padding=True, ca_rope=True, cross_gates=True, fix_modulation=True,
        visual_token_type_num_embeddings=2)
    gains = {"visual_token_type_embeddings.": 0.1, "visual_embeddings.in_layer.weight": 8.0,
             ".self_attention.to_value.weight": 8.0, ".self_attention.out_layer.weight": 8.0}
    with torch.no_grad():
        for name, weight in transformer.named_parameters():
            for part, gain in gains.items():
                if part in name:
                    weight.mul_(gain)
    torch.manual_seed(0)
    vae = responsive(AutoencoderKLHunyuanVideo(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4))
    tokenizer = Qwen2Tokenizer(vocab=_bpe_vocab(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "\u0120"), merges=[])
    torch.manual_seed(0)
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2,
                         rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=16,
                           patch_size=2, spatial_merge_size=1, temporal_patch_size=1))).eval()
    letters = "abcdefghijklmnopqrstuvwxyz"  # CLIP's BPE marks a word's last letter with </w>
    tokenizer_2 = CLIPTokenizer(vocab={piece: i for i, piece in enumerate(
        ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)])}, merges=[])
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer_2), hidden_size=8, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()
    torch.manual_seed(0)
    audio_vae = MMAudioVAE(mel_bins=8, latent_channels=4, hidden_channels=8, channel_multipliers=(1, 1),
                           layers_per_block=1, sample_rate=8000, n_fft=128, hop_length=64)
    torch.manual_seed(0)
    vocoder = MMAudioVocoder(num_mels=8, upsample_initial_channel=16, upsample_rates=(4, 4, 4),
                             upsample_kernel_sizes=(8, 8, 8), resblock_kernel_sizes=(3,),
                             resblock_dilation_sizes=((1, 3, 5),))
    return Kandinsky6TI2VAPipeline(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                                   scheduler=FlowMatchEulerDiscreteScheduler(), audio_vae=audio_vae, vocoder=vocoder)


def kandinsky6_sr_pipeline():
    """Kandinsky6SRPipeline (video super-resolution, its own checkpoint): the NABLA sparse-attention transformer on
    32 x 32 output tiles (an 8 x 8 token grid, the smallest NABLA takes), its 4x VAE and the x2 / x4 latent
    upscaler bank."""
    from diffusers import (FlowMatchEulerDiscreteScheduler, Kandinsky6SRLatentUpscalerBank, Kandinsky6SRPipeline,
                           Kandinsky6SRTransformer3DModel, Kandinsky6SRVAE)

    torch.manual_seed(0)
    vae = Kandinsky6SRVAE(latent_channels=4, encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                          layers_per_block=1)
    torch.manual_seed(0)
    transformer = Kandinsky6SRTransformer3DModel(in_visual_dim=4, out_visual_dim=4, time_dim=16, model_dim=24,
                                                 ff_dim=32, num_visual_blocks=1, axes_dims=(4, 4, 4),
                                                 nabla_window=(3, 3, 3), tile_sizes=((32, 32),))
    torch.manual_seed(0)
    upscaler = Kandinsky6SRLatentUpscalerBank(in_channels=4, stage_channels=(8, 8, 8), num_pre_blocks=1,
                                              num_mid_blocks=1, num_post_blocks=1, num_x2_adapter_blocks=1)
    return Kandinsky6SRPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                                latent_upscaler=upscaler)


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
    "ltx-condition": ltx_condition_pipeline,
    "ltx-upsampler": ltx_upsampler_pipeline,
    "ltx2": ltx2_pipeline,
    "ltx2-dfr": ltx2_dfr_pipeline,
    "ltx2-upsampler": ltx2_upsampler_pipeline,
    "ltx2-decoder": ltx2_decoder_pipeline,
    "ltx2-temporal-upsampler": ltx2_temporal_upsampler,
    "wan": wan_pipeline,
    "wan-i2v": lambda: wan_pipeline(image_to_video=True),
    "wan2.2-ti2v": wan22_ti2v_pipeline,
    "wan2.2-a14b": wan22_a14b_pipeline,
    "wan-vace": wan_vace_pipeline,
    "skyreels-v2": skyreels_v2_pipeline,
    "hunyuanvideo1.5": hunyuan15_pipeline,
    "hunyuanvideo1.5-i2v": lambda: hunyuan15_pipeline(image_to_video=True),
    "cogvideox": cogvideox_pipeline,
    "helios": helios_pipeline,
    "lucy-edit": lucy_edit_pipeline,
    "sana-video": sana_video_pipeline,
    "motif-video": motif_video_pipeline,
    "helios-pyramid": helios_pyramid_pipeline,
    "helios-distilled": helios_distilled_pipeline,
    "framepack": framepack_pipeline,
    "wan-animate": wan_animate_pipeline,
    "chronoedit": chronoedit_pipeline,
    "kandinsky6": kandinsky6_pipeline,
    "kandinsky6-sr": kandinsky6_sr_pipeline,
}
# model_index.json entries the published checkpoints have and a tiny build cannot: Kandinsky 6 names the
# Qwen2_5_VLProcessor (its folder holds the Qwen2 tokenizer's files, which is what is saved here)
PUBLISHED_LAYOUT = {"kandinsky6": {"tokenizer": ["transformers", "Qwen2_5_VLProcessor"]}}


def save_tiny_checkpoint(kind: str, directory: str) -> str:
    """Build the tiny `kind` pipeline and save it as a full pipeline folder; returns the folder."""
    os.makedirs(directory, exist_ok=True)
    BUILDERS[kind]().save_pretrained(directory)
    if kind in PUBLISHED_LAYOUT:
        index_file = os.path.join(directory, "model_index.json")
        with open(index_file) as fh:
            index = json.load(fh)
        with open(index_file, "w") as fh:
            json.dump({**index, **PUBLISHED_LAYOUT[kind]}, fh, indent=2)
    return directory


_built: dict = {}  # kind -> folder, for this process


def cached_checkpoint(kind: str) -> str:
    """The tiny `kind` checkpoint, built once per test process into a temporary folder removed at exit
    (several suites configure the same ones)."""
    if kind not in _built:
        root = tempfile.mkdtemp(prefix=f"tiny-{kind}-")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _built[kind] = save_tiny_checkpoint(kind, os.path.join(root, kind))
    return _built[kind]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: the two cores here are shared, and tiny models gain nothing
    from more (suites opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")` after importing it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
