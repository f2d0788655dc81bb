"""Random tiny LTX-Video models in the real diffusers folder layout.

No weights can be downloaded on test machines, so tests and the demo build these and load them
through exactly the code that loads the 13B model. The VAE keeps the real 0.9.7 structure
(patch size 4, spatial/temporal/spatiotemporal downsampling: 32x spatial, 8x temporal, causal
encoder) with narrow channels, so every frame-count and bucket rule behaves as with the real
model; latent channels shrink to 16 together with the transformer's in/out channels.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

TINY_LATENT_CHANNELS = 16
TINY_TEXT_HIDDEN = 32

# Words the tokenizer is trained on: enough for captions of the demo and tests to tokenize
# into real pieces rather than <unk>.
_TOKENIZER_CORPUS = (
    "a the of and in on with at to from by is are was it this that video clip scene shot camera "
    "person man woman child dog cat bird car tree sky sun water grass city street room light dark "
    "red green blue yellow white black moving walks runs dances jumps turns flies slowly quickly "
    "close up wide zoom pan left right up down day night indoor outdoor circle square stripe "
    "colour color bright gradient background foreground APT demo style motion"
)

TRANSFORMER_CONFIG = {
    "in_channels": TINY_LATENT_CHANNELS,
    "out_channels": TINY_LATENT_CHANNELS,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "cross_attention_dim": 32,
    "num_layers": 2,
    "caption_channels": TINY_TEXT_HIDDEN,
    "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm_across_heads",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "attention_bias": True,
    "attention_out_bias": True,
}

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": TINY_LATENT_CHANNELS,
    "block_out_channels": (8, 16, 32, 32, 32),
    "down_block_types": ("LTXVideo095DownBlock3D",) * 4,
    "decoder_block_out_channels": (8, 16, 32),
    "layers_per_block": (1, 1, 1, 1, 1),
    "decoder_layers_per_block": (1, 1, 1, 1),
    "spatio_temporal_scaling": (True, True, True, True),
    "decoder_spatio_temporal_scaling": (True, True, True),
    "decoder_inject_noise": (False, False, False, False),
    "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
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

T5_CONFIG = {
    "d_model": TINY_TEXT_HIDDEN,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
}

# The scheduler settings LTX-Video 0.9.7 ships with (dynamic shifting on the token count).
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": False,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}


def build_tokenizer():
    """A T5 tokenizer trained offline in well under a second (Unigram, like T5's sentencepiece)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import T5TokenizerFast

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    words = _TOKENIZER_CORPUS.split()
    corpus = [" ".join(words[i : i + 7]) for i in range(len(words))] * 4
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return T5TokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=128,
    )


def build_tiny_components(seed: int = 0) -> dict:
    """Random tiny transformer, VAE, T5 encoder, tokenizer and scheduler (float32, CPU)."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    transformer = LTXVideoTransformer3DModel(**TRANSFORMER_CONFIG)
    vae = AutoencoderKLLTXVideo(**VAE_CONFIG)
    # Real LTX VAEs carry per-channel statistics; non-trivial ones exercise normalisation.
    vae.latents_mean.copy_(torch.linspace(-0.1, 0.1, TINY_LATENT_CHANNELS))
    vae.latents_std.copy_(torch.linspace(0.8, 1.2, TINY_LATENT_CHANNELS))
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), **T5_CONFIG))
    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
    return {
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def save_tiny_model(path: str | Path, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a tiny model folder laid out like LTX-Video-0.9.7-diffusers; return its path.

    The transformer is saved in several shards with an index, so the shard checks run on it.
    An existing complete folder is kept unless `overwrite` is set; a broken one is rebuilt.
    """
    from diffusers import LTXPipeline

    from ltxtrainer.models.folder import check_model_folder

    path = Path(path)
    if not overwrite and check_model_folder(path).ok:
        return path
    staging = path.with_name(path.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    components = build_tiny_components(seed)
    pipeline = LTXPipeline(**components)
    pipeline.save_pretrained(staging, safe_serialization=True)
    components["transformer"].save_pretrained(
        staging / "transformer", safe_serialization=True, max_shard_size="60KB"
    )
    for stale in (staging / "transformer").glob("diffusion_pytorch_model.safetensors"):
        stale.unlink()
    info = {"built_by": "ltxtrainer.models.tiny", "seed": seed, "variant": "tiny"}
    (staging / "ltxtrainer_tiny.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    if path.exists():
        shutil.rmtree(path)
    staging.rename(path)
    return path
