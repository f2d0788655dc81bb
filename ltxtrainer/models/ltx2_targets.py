"""LTX-2's LoRA target names, without torch: the GUI (which never imports torch) offers them as
presets, the estimator counts them, and `ltx2` hands them to peft."""

from __future__ import annotations

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
FEED_FORWARD = ("net.0.proj", "net.2")
VIDEO_ATTENTION = ("attn1", "attn2")
AUDIO_ATTENTION = ("audio_attn1", "audio_attn2")
CROSS_MODAL_ATTENTION = ("audio_to_video_attn", "video_to_audio_attn")


def lora_target_modules(
    feed_forward: bool = False, audio: bool = False, cross_modal: bool = False
) -> list[str]:
    """peft `target_modules` for the LTX-2 transformer, all inside `transformer_blocks.N`.

    Always the video self- and prompt cross-attention (`attn1`, `attn2`); optionally the video
    feed-forward (`ff`, plus `audio_ff` when `audio`), the audio attention (`audio_attn1/2`) and the
    audio<->video cross-attention. peft matches a name when a module path ends with "." + it, so
    `attn1.to_q` never catches `audio_attn1.to_q`, nor `ff.net.2` `audio_ff.net.2`.
    """
    blocks = list(VIDEO_ATTENTION)
    if audio:
        blocks += AUDIO_ATTENTION
    if cross_modal:
        blocks += CROSS_MODAL_ATTENTION
    modules = [f"{block}.{projection}" for block in blocks for projection in ATTENTION_PROJECTIONS]
    if feed_forward:
        modules += [f"ff.{layer}" for layer in FEED_FORWARD]
        if audio:
            modules += [f"audio_ff.{layer}" for layer in FEED_FORWARD]
    return modules
