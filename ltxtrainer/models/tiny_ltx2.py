"""Random tiny LTX-2 models (LTX-2, LTX-2.3 and LTX-2.5 layouts) in the real diffusers folder layout.

No weights can be downloaded on test machines, so tests build these and load them through
`LTX2Pipeline.from_pretrained`, exactly as the 19B/22B folders load. Only widths and depths
shrink; every rule the trainer depends on stays real:

- video VAE: patch size 4 and spatial/temporal/spatiotemporal downsampling (32x spatial, 8x
  temporal, causal encoder), frames 8k+1, widths multiples of 32;
- audio: 16 kHz waveform, 64 mel bins, hop 160 (100 mel frames a second), an audio VAE that
  compresses 4x in time and mel (25 latent frames a second, 16 latent mel bins), stereo input,
  and a vocoder that upsamples 240x to 24 kHz;
- text: a Gemma 3 whose every hidden state (embeddings + each layer) is stacked and flattened, left
  padding to 1024 tokens, connectors with 128 learnable registers.

The audio VAE's per-channel statistics have `base_channels` entries and the pipeline applies them
to packed audio latents of `latent_channels x mel_bins / 4` features (128 = 8 x 16 for the real
model), so the tiny one keeps that equality: 32 base channels, 2 latent channels.

`version="2.3"` builds the LTX-2.3 layout: gated attention (`to_gate_logits`) in the transformer
and connectors, timestep-modulated prompt cross-attention, per-modality text projections in the
connectors and no caption projection in the transformer.

`version="2.5"` builds the LTX-2.5 layout as diffusers 0.42 loads it: the 2.3 transformer with
bias-free video feed-forwards, a timestep-independent prompt modulation table
(`use_prompt_adaln_single=False`) and the keyframe position embedding; a Gemma 4
(`Gemma4UnifiedForConditionalGeneration`, text tower only) instead of Gemma 3; and the
`duration_head` that predicts a clip length from the caption. The optional `prompt_enhancer`
(a separate Gemma 4 chat model) is left out: neither training nor validation prompts use it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import torch

LTX2Version = Literal["2.0", "2.3", "2.5"]
VERSIONS: tuple[str, ...] = ("2.0", "2.3", "2.5")

TINY_VIDEO_LATENT_CHANNELS = 16
TINY_AUDIO_LATENT_CHANNELS = 2
TINY_AUDIO_BASE_CHANNELS = 32  # = TINY_AUDIO_LATENT_CHANNELS * MEL_BINS / 4 (see module docstring)
TINY_GEMMA_HIDDEN = 32
TINY_GEMMA_LAYERS = 2

# The real audio settings of LTX-2 (its audio VAE config and the vocoder's output rate).
AUDIO_SAMPLE_RATE = 16000
MEL_BINS = 64
MEL_HOP_LENGTH = 160
VOCODER_SAMPLE_RATE = 24000

_TOKENIZER_CORPUS = (
    "a the of and in on with at to from by is are was it this that video clip scene shot camera "
    "person man woman child dog cat bird car tree sky sun water grass city street room light dark "
    "red green blue yellow white black moving walks runs dances jumps turns flies slowly quickly "
    "close up wide zoom pan left right up down day night indoor outdoor circle square stripe "
    "colour color bright gradient background foreground APT demo style motion sound music voice "
    "speaks sings rain wind loud quiet"
)

VIDEO_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": TINY_VIDEO_LATENT_CHANNELS,
    "block_out_channels": (8, 16, 32, 32),
    "down_block_types": ("LTX2VideoDownBlock3D",) * 4,
    "decoder_block_out_channels": (8, 16, 32),
    "layers_per_block": (1, 1, 1, 1, 1),
    "decoder_layers_per_block": (1, 1, 1, 1),
    "spatio_temporal_scaling": (True, True, True, True),
    "decoder_spatio_temporal_scaling": (True, True, True),
    "decoder_inject_noise": (False, False, False, False),
    "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    "upsample_type": ("spatiotemporal", "spatiotemporal", "spatiotemporal"),
    "upsample_residual": (True, True, True),
    "upsample_factor": (2, 2, 2),
    "timestep_conditioning": False,
    "patch_size": 4,
    "patch_size_t": 1,
    "encoder_causal": True,
    "decoder_causal": False,
    "spatial_compression_ratio": 32,
    "temporal_compression_ratio": 8,
}

AUDIO_VAE_CONFIG = {
    "base_channels": TINY_AUDIO_BASE_CHANNELS,
    "output_channels": 2,
    "ch_mult": (1, 2, 4),  # three levels = two 2x downsamplings = the real 4x
    "num_res_blocks": 1,
    "attn_resolutions": None,
    "in_channels": 2,
    "resolution": 256,
    "latent_channels": TINY_AUDIO_LATENT_CHANNELS,
    "norm_type": "pixel",
    "causality_axis": "height",
    "dropout": 0.0,
    "mid_block_add_attention": False,
    "sample_rate": AUDIO_SAMPLE_RATE,
    "mel_hop_length": MEL_HOP_LENGTH,
    "is_causal": True,
    "mel_bins": MEL_BINS,
    "double_z": True,
}

VOCODER_CONFIG = {
    "in_channels": 2 * MEL_BINS,  # stereo mel spectrogram, channels folded into features
    "hidden_channels": 64,
    "out_channels": 2,
    "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "upsample_factors": [6, 5, 2, 2, 2],  # 240x: 100 mel frames/s -> 24 kHz
    "resnet_kernel_sizes": [3],
    "resnet_dilations": [[1]],
    "output_sampling_rate": VOCODER_SAMPLE_RATE,
}

_VIDEO_HEADS, _VIDEO_HEAD_DIM = 2, 16
_AUDIO_HEADS, _AUDIO_HEAD_DIM = 2, 8
VIDEO_INNER_DIM = _VIDEO_HEADS * _VIDEO_HEAD_DIM
AUDIO_INNER_DIM = _AUDIO_HEADS * _AUDIO_HEAD_DIM


def transformer_config(version: LTX2Version = "2.0") -> dict:
    """The tiny transformer's config; 2.3 switches on gated attention and prompt modulation, 2.5
    keeps those and adds its own switches (see the module docstring)."""
    lt23 = version in ("2.3", "2.5")
    lt25 = {"ff_bias": False, "use_prompt_adaln_single": False, "use_keyframes_abs_pos_embedding": True}
    return {
        "in_channels": TINY_VIDEO_LATENT_CHANNELS,
        "out_channels": TINY_VIDEO_LATENT_CHANNELS,
        "patch_size": 1,
        "patch_size_t": 1,
        "num_attention_heads": _VIDEO_HEADS,
        "attention_head_dim": _VIDEO_HEAD_DIM,
        "cross_attention_dim": VIDEO_INNER_DIM,
        "vae_scale_factors": (8, 32, 32),
        "gated_attn": lt23,
        "cross_attn_mod": lt23,
        "audio_in_channels": TINY_AUDIO_LATENT_CHANNELS * MEL_BINS // 4,
        "audio_out_channels": TINY_AUDIO_LATENT_CHANNELS * MEL_BINS // 4,
        "audio_num_attention_heads": _AUDIO_HEADS,
        "audio_attention_head_dim": _AUDIO_HEAD_DIM,
        "audio_cross_attention_dim": AUDIO_INNER_DIM,
        "audio_scale_factor": 4,
        "audio_sampling_rate": AUDIO_SAMPLE_RATE,
        "audio_hop_length": MEL_HOP_LENGTH,
        "audio_gated_attn": lt23,
        "audio_cross_attn_mod": lt23,
        "num_layers": 2,
        "caption_channels": TINY_GEMMA_HIDDEN,
        "use_prompt_embeddings": not lt23,
        **(lt25 if version == "2.5" else {}),
    }


def connectors_config(version: LTX2Version = "2.0") -> dict:
    """The tiny text connectors: 2.0 shares one projection; 2.3 and 2.5 project per modality, gated."""
    lt23 = version in ("2.3", "2.5")
    if lt23:
        video_heads, video_dim, audio_heads, audio_dim = (
            _VIDEO_HEADS,
            _VIDEO_HEAD_DIM,
            _AUDIO_HEADS,
            _AUDIO_HEAD_DIM,
        )
    else:  # 2.0: both connectors work at the Gemma width; the transformer projects afterwards
        video_heads = audio_heads = 2
        video_dim = audio_dim = TINY_GEMMA_HIDDEN // 2
    return {
        "caption_channels": TINY_GEMMA_HIDDEN,
        "text_proj_in_factor": TINY_GEMMA_LAYERS + 1,
        "video_connector_num_attention_heads": video_heads,
        "video_connector_attention_head_dim": video_dim,
        "video_connector_num_layers": 1,
        "video_connector_num_learnable_registers": 128,
        "video_gated_attn": lt23,
        "audio_connector_num_attention_heads": audio_heads,
        "audio_connector_attention_head_dim": audio_dim,
        "audio_connector_num_layers": 1,
        "audio_connector_num_learnable_registers": 128,
        "audio_gated_attn": lt23,
        "per_modality_projections": lt23,
        "video_hidden_dim": VIDEO_INNER_DIM,
        "audio_hidden_dim": AUDIO_INNER_DIM,
        "proj_bias": lt23,
    }


# LTX-2's scheduler: flow matching with the resolution-dependent shift the pipeline computes.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
    "time_shift_type": "exponential",
}


def build_gemma_tokenizer():
    """A Gemma tokenizer trained offline in well under a second (BPE with Gemma's special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GemmaTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"])
    words = _TOKENIZER_CORPUS.split()
    corpus = [" ".join(words[i : i + 7]) for i in range(len(words))] * 4
    tokenizer.train_from_iterator(corpus, trainer)
    return GemmaTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=1024,
    )


def build_gemma3(vocab_size: int):
    """A two-layer Gemma 3 (with the tiny SigLIP tower the real multimodal class carries)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    config = Gemma3Config(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": TINY_GEMMA_HIDDEN,
            "intermediate_size": 64,
            "num_hidden_layers": TINY_GEMMA_LAYERS,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "sliding_window": 64,
            "max_position_embeddings": 2048,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        mm_tokens_per_image=4,
    )
    return Gemma3ForConditionalGeneration(config)


def build_gemma4(vocab_size: int):
    """A two-layer Gemma 4 text tower (LTX-2.5's encoder class, without its vision and audio towers,
    which text encoding never runs): one sliding and one full attention layer, as Gemma 4 ends."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    config = Gemma4UnifiedConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": TINY_GEMMA_HIDDEN,
            "intermediate_size": 64,
            "num_hidden_layers": TINY_GEMMA_LAYERS,
            "layer_types": ["sliding_attention", "full_attention"],
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "global_head_dim": 16,
            "sliding_window": 64,
            "max_position_embeddings": 2048,
        },
        vision_config=None,
        audio_config=None,
    )
    return Gemma4UnifiedForConditionalGeneration(config)


# LTX-2.5's duration head reads the connector outputs; only its widths follow the tiny connectors.
DURATION_HEAD_CONFIG = {
    "video_cross_attention_dim": VIDEO_INNER_DIM,
    "audio_cross_attention_dim": AUDIO_INNER_DIM,
    "pooler_hidden_dim": 16,
    "num_pooler_heads": 2,
    "mlp_hidden_dim": 16,
}


def build_tiny_ltx2_components(version: LTX2Version = "2.0", seed: int = 0) -> dict:
    """Every component `LTX2Pipeline` takes, random and tiny (float32, CPU)."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2DurationHead, LTX2TextConnectors, LTX2Vocoder

    if version not in VERSIONS:
        raise ValueError(f"LTX-2 version must be one of {', '.join(VERSIONS)}, not {version!r}")
    torch.manual_seed(seed)
    tokenizer = build_gemma_tokenizer()
    video_vae = AutoencoderKLLTX2Video(**VIDEO_VAE_CONFIG)
    # Real VAEs carry per-channel statistics; non-trivial ones exercise normalisation.
    video_vae.latents_mean.copy_(torch.linspace(-0.1, 0.1, TINY_VIDEO_LATENT_CHANNELS))
    video_vae.latents_std.copy_(torch.linspace(0.8, 1.2, TINY_VIDEO_LATENT_CHANNELS))
    audio_vae = AutoencoderKLLTX2Audio(**AUDIO_VAE_CONFIG)
    audio_vae.latents_mean.copy_(torch.linspace(-0.2, 0.2, TINY_AUDIO_BASE_CHANNELS))
    audio_vae.latents_std.copy_(torch.linspace(0.7, 1.3, TINY_AUDIO_BASE_CHANNELS))
    lt25 = version == "2.5"
    text_encoder = build_gemma4(len(tokenizer)) if lt25 else build_gemma3(len(tokenizer))
    return {
        "transformer": LTX2VideoTransformer3DModel(**transformer_config(version)).eval(),
        "vae": video_vae.eval(),
        "audio_vae": audio_vae.eval(),
        "vocoder": LTX2Vocoder(**VOCODER_CONFIG).eval(),
        "connectors": LTX2TextConnectors(**connectors_config(version)).eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
        **({"duration_head": LTX2DurationHead(**DURATION_HEAD_CONFIG).eval()} if lt25 else {}),
    }


def save_tiny_ltx2_model(
    path: str | Path, version: LTX2Version = "2.0", seed: int = 0, overwrite: bool = False
) -> Path:
    """Write a tiny model folder laid out like Lightricks/LTX-2 in diffusers format; return its path.

    An existing complete folder is kept unless `overwrite` is set; a broken one is rebuilt.
    """
    from diffusers import LTX2Pipeline

    from ltxtrainer.models.folder import check_model_folder

    path = Path(path)
    if not overwrite and check_model_folder(path).ok:
        return path
    staging = path.with_name(path.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline = LTX2Pipeline(**build_tiny_ltx2_components(version, seed))
    pipeline.save_pretrained(staging, safe_serialization=True)
    info = {"built_by": "ltxtrainer.models.tiny_ltx2", "seed": seed, "variant": "tiny", "version": version}
    (staging / "ltxtrainer_tiny.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    if path.exists():
        shutil.rmtree(path)
    staging.rename(path)
    return path
