"""LTX-2 family: tiny models load and generate through diffusers, and every piece of the future
family interface (text, video, audio encoding, the training step, LoRA presets, the ComfyUI file)
matches what `LTX2Pipeline` itself does."""

from __future__ import annotations

import json
import re
import runpy
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, LTX2Pipeline
from peft import LoraConfig, get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltxtrainer.config import config_from_dict
from ltxtrainer.models import ltx2
from ltxtrainer.models.folder import check_model_folder, detect_family
from ltxtrainer.models.tiny_ltx2 import (
    AUDIO_SAMPLE_RATE,
    VOCODER_SAMPLE_RATE,
    connectors_config,
    save_tiny_ltx2_model,
    transformer_config,
)
from ltxtrainer.precompute_ltx2 import ClipToEncode, precompute_ltx2_samples
from ltxtrainer.training.trainer import run_training
from tests.test_ltx2_training import (
    CLIP_FRAMES,
    SIZE,
    VALIDATION_FRAMES,
    run_config,
    streams,
    write_clip_with_sound,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDTH = HEIGHT = 64
NUM_FRAMES, FPS = 9, 8.0  # 2 latent frames of 2x2 tokens; 1.125 s = 28 audio latent frames


@pytest.fixture(scope="module")
def tiny_ltx2_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny LTX-2 and LTX-2.3 folders; the 2.0 one written by the command users run."""
    root = tmp_path_factory.mktemp("models") / "我的 models"
    folder_20 = root / "tiny-ltx2"
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "make_tiny_models.py"))
    argv = sys.argv
    sys.argv = ["make_tiny_models.py", "--family", "ltx2", "--output", str(folder_20)]
    try:
        assert script["main"]() == 0
    finally:
        sys.argv = argv
    return {"2.0": folder_20, "2.3": save_tiny_ltx2_model(root / "tiny-ltx2.3", version="2.3")}


@pytest.fixture(scope="module")
def pipelines(tiny_ltx2_dirs: dict[str, Path]) -> dict[str, LTX2Pipeline]:
    return {version: LTX2Pipeline.from_pretrained(path) for version, path in tiny_ltx2_dirs.items()}


# ---------------------------------------------------------------- tiny models and folders


@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_tiny_folder_generates_video_and_sound_through_ltx2_pipeline(
    tiny_ltx2_dirs: dict[str, Path], version: str
) -> None:
    folder = tiny_ltx2_dirs[version]
    pipeline = DiffusionPipeline.from_pretrained(folder)
    assert type(pipeline) is LTX2Pipeline
    assert pipeline.transformer.config.gated_attn is (version == "2.3")
    assert (pipeline.transformer.transformer_blocks[0].attn1.to_gate_logits is not None) is (version == "2.3")
    # Real compression: 32x spatial, 8x temporal, audio 4x in time and mel, vocoder 16 kHz mel -> 24 kHz.
    assert pipeline.vae.spatial_compression_ratio == 32 and pipeline.vae.temporal_compression_ratio == 8
    assert (
        pipeline.audio_vae.config.sample_rate == AUDIO_SAMPLE_RATE
        and pipeline.audio_vae.config.mel_bins == 64
    )
    assert pipeline.vocoder.config.output_sampling_rate == VOCODER_SAMPLE_RATE

    video, audio = pipeline(
        prompt="a dog runs in the city",
        width=WIDTH,
        height=HEIGHT,
        num_frames=NUM_FRAMES,
        frame_rate=FPS,
        num_inference_steps=2,
        output_type="np",
        return_dict=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert video.shape == (1, NUM_FRAMES, HEIGHT, WIDTH, 3)
    assert np.isfinite(video).all()
    duration = NUM_FRAMES / FPS
    assert audio.shape[:2] == (1, 2)
    assert abs(audio.shape[-1] - duration * VOCODER_SAMPLE_RATE) < 0.05 * duration * VOCODER_SAMPLE_RATE
    assert torch.isfinite(audio).all()


def test_folder_check_recognises_ltx2_and_names_its_missing_parts(
    tiny_ltx2_dirs: dict[str, Path], tmp_path: Path
) -> None:
    report = check_model_folder(tiny_ltx2_dirs["2.0"])
    assert report.ok, report.message()
    assert (report.family, report.variant) == ("ltx2", "tiny")
    assert "LTX-2" in report.message()

    broken = Path(shutil.copytree(tiny_ltx2_dirs["2.3"], tmp_path / "LTX-2.3 下载"))
    (broken / "ltxtrainer_tiny.json").unlink()
    assert check_model_folder(broken).variant == "2.3"
    shutil.rmtree(broken / "audio_vae")
    (broken / "vocoder" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (broken / "connectors" / "config.json").unlink()

    report = check_model_folder(broken)
    text = "\n".join(report.problems)
    assert "missing subfolder audio_vae/" in text
    assert "empty file" in text and "vocoder" in text
    assert "missing connectors config" in text
    assert len(report.problems) == 3, report.problems
    assert "audio_vae/" in report.message() and "Lightricks/LTX-2" in report.message()


def test_every_component_loads_offline_as_the_class_model_index_names(
    tiny_ltx2_dirs: dict[str, Path],
) -> None:
    folder = tiny_ltx2_dirs["2.3"]
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    names = [
        "transformer",
        "vae",
        "audio_vae",
        "vocoder",
        "connectors",
        "text_encoder",
        "tokenizer",
        "scheduler",
    ]
    for name in names:
        component = ltx2.load_component(folder, name, dtype=torch.bfloat16)
        assert type(component).__name__ == index[name][1], name
        if isinstance(component, torch.nn.Module):
            assert next(component.parameters()).dtype == torch.bfloat16, name
    tokenizer = ltx2.load_component(folder, "tokenizer")
    assert tokenizer.unk_token_id not in tokenizer("a dog runs in the rain").input_ids
    assert type(ltx2.load_pipeline(folder)) is LTX2Pipeline


@pytest.mark.parametrize(
    ("class_name", "family"),
    [
        ("LTXPipeline", "ltx_video"),
        ("LTXConditionPipeline", "ltx_video"),
        ("LTX2Pipeline", "ltx2"),
        ("LTX2ImageToVideoPipeline", "ltx2"),
    ],
)
def test_family_is_read_from_model_index_class_name(class_name: str, family: str) -> None:
    assert detect_family({"_class_name": class_name}) == family
    assert detect_family(None) == "ltx_video"


# ---------------------------------------------------------------- text


def test_caption_embeddings_are_the_connector_outputs_the_transformer_attends_to(pipelines) -> None:
    pipeline = pipelines["2.0"]
    stored = ltx2.encode_prompts(
        pipeline.tokenizer,
        pipeline.text_encoder,
        pipeline.connectors,
        ["a dog runs", "a red car at night in the rain"],
    )
    # With learnable registers (as in the released models) all 1024 positions are attended.
    assert [item.video.shape for item in stored] == [(1024, 32)] * 2
    prompt_embeds, mask, _, _ = pipeline.encode_prompt("a dog runs", do_classifier_free_guidance=False)
    video, audio, keep = pipeline.connectors(prompt_embeds, mask, padding_side="left")
    assert keep.all()
    torch.testing.assert_close(stored[0].video, video[0])
    torch.testing.assert_close(stored[0].audio, audio[0])

    # The real sizes stated in the docstring.
    real_20 = {
        **connectors_config("2.0"),
        "video_connector_num_attention_heads": 30,
        "video_connector_attention_head_dim": 128,
        "audio_connector_num_attention_heads": 30,
        "audio_connector_attention_head_dim": 128,
    }
    assert ltx2.text_embedding_bytes(real_20) == 1024 * 7680 * 2


# ---------------------------------------------------------------- video and audio


def test_video_latents_match_the_pipelines_own_normalise_and_pack(pipelines) -> None:
    pipeline = pipelines["2.0"]
    video = torch.rand(1, 3, NUM_FRAMES, HEIGHT, WIDTH) * 2 - 1
    packed = ltx2.encode_video(pipeline.vae, video)
    frames, height, width = ltx2.latent_size(dict(pipeline.vae.config), WIDTH, HEIGHT, NUM_FRAMES)
    assert packed.shape == (1, frames * height * width, 16)
    raw = pipeline.vae.encode(video).latent_dist.mode()
    expected = pipeline.prepare_latents(latents=raw, noise_scale=0.0, dtype=torch.float32)
    torch.testing.assert_close(packed, expected)


def _write_clip(path: Path, seconds: float, layout: str | None, rate: int, tones: list[float]) -> Path:
    """A video (and, with `layout`, lossless PCM sound: one sine per channel) in a .mkv container."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=int(FPS))
        video.width = video.height = WIDTH
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=rate, layout=layout) if layout else None
        for index in range(int(seconds * FPS)):
            image = np.full((HEIGHT, WIDTH, 3), index * 20 % 255, np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        if audio is not None:
            times = np.arange(int(seconds * rate)) / rate
            wave = np.stack([0.25 * np.sin(2 * np.pi * tone * times) for tone in tones])
            pcm = (wave * 32767).astype(np.int16)
            for start in range(0, pcm.shape[1], 1000):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(pcm[:, start : start + 1000].T.reshape(1, -1)),
                    format="s16",
                    layout=layout,
                )
                frame.sample_rate = rate
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
        container.mux(video.encode(None))
    return path


def test_audio_is_read_at_the_vae_rate_and_mono_stereo_and_5_1_become_stereo(tmp_path: Path) -> None:
    duration = NUM_FRAMES / FPS
    mono = ltx2.read_audio(
        _write_clip(tmp_path / "单声道 clip.mkv", 1.5, "mono", 16000, [300]), 16000, 2, 0.25, duration
    )
    assert mono.shape == (2, 18000)
    torch.testing.assert_close(mono[0], mono[1])
    assert 0.24 < mono.abs().max() < 0.26  # duplicated at full level
    times = (torch.arange(18000) + 4000) / 16000  # the read starts 0.25 s in
    torch.testing.assert_close(mono[0], 0.25 * torch.sin(2 * torch.pi * 300 * times), atol=2e-4, rtol=0)

    tones = [200, 300, 400, 50, 500, 600]  # FL FR FC LFE SL SR
    surround = ltx2.read_audio(
        _write_clip(tmp_path / "surround.mkv", 1.5, "5.1", 16000, tones), 16000, 2, 0.0, duration
    )
    times = torch.arange(18000) / 16000
    channel = [0.25 * torch.sin(2 * torch.pi * tone * times) for tone in tones]
    left = (channel[0] + 0.707 * (channel[2] + channel[4])) / 2.414
    right = (channel[1] + 0.707 * (channel[2] + channel[5])) / 2.414
    torch.testing.assert_close(surround, torch.stack([left, right]), atol=3e-4, rtol=0)

    # 44.1 kHz stereo is resampled: same duration in samples, the tone stays at its frequency.
    stereo = ltx2.read_audio(
        _write_clip(tmp_path / "stereo.mkv", 1.5, "stereo", 44100, [440, 880]), 16000, 2, 0.0, duration
    )
    assert stereo.shape == (2, 18000)
    peaks = torch.fft.rfft(stereo).abs().argmax(dim=-1) * 16000 / 18000
    assert torch.allclose(peaks, torch.tensor([440.0, 880.0]), atol=2.0)

    # Shorter sound is padded with silence; a clip without sound has no audio.
    short = ltx2.read_audio(
        _write_clip(tmp_path / "short.mkv", 1.5, "mono", 16000, [300]), 16000, 2, 1.0, duration
    )
    assert short.shape == (2, 18000) and short[:, 8500:].abs().max() == 0
    assert (
        ltx2.read_audio(_write_clip(tmp_path / "silent.mkv", 1.5, None, 16000, []), 16000, 2, 0.0, duration)
        is None
    )
    broken = tmp_path / "坏 clip.mp4"
    broken.write_text("not a video", encoding="utf-8")
    with pytest.raises(ltx2.AudioFileError, match="坏 clip.mp4"):
        ltx2.read_audio(broken, 16000, 2, 0.0, duration)


def test_mel_spectrogram_puts_a_tone_in_its_slaney_mel_band_and_floors_silence() -> None:
    from transformers.audio_utils import hertz_to_mel, mel_to_hertz

    config = {"sample_rate": 16000, "mel_hop_length": 160, "mel_bins": 64}
    times = torch.arange(16000) / 16000
    tones = torch.stack(
        [0.5 * torch.sin(2 * torch.pi * 440 * times), 0.5 * torch.sin(2 * torch.pi * 3000 * times)]
    )
    mel = ltx2.mel_spectrogram(torch.stack([tones, torch.zeros_like(tones)]), config)
    assert mel.shape == (2, 2, 101, 64)  # [B, channels, frames (hop 160, centred), mel bins]
    # Band centres of 64 Slaney bands between 0 Hz and 8 kHz.
    edges = mel_to_hertz(np.linspace(0, hertz_to_mel(8000.0, "slaney"), 66), "slaney")
    centres = torch.tensor(edges[1:-1])
    for channel, tone in enumerate((440.0, 3000.0)):
        peak = mel[0, channel, 50].argmax()
        assert int(peak) == int((centres - tone).abs().argmin()), (tone, centres[peak])
    assert (mel[1] == np.log(ltx2.LOG_MEL_FLOOR)).all()


def test_audio_latents_match_the_pipelines_own_pack_and_normalise(pipelines) -> None:
    pipeline = pipelines["2.0"]
    duration = NUM_FRAMES / FPS
    waveform = torch.randn(1, 2, round(duration * AUDIO_SAMPLE_RATE)) * 0.1
    packed = ltx2.encode_audio(pipeline.audio_vae, waveform, duration)
    # As many latent frames as the pipeline generates for this clip (25 a second).
    frames = round(duration * pipeline.audio_sampling_rate / pipeline.audio_hop_length / 4)
    assert packed.shape == (1, frames, 32)
    mel = ltx2.mel_spectrogram(waveform, dict(pipeline.audio_vae.config))
    assert mel.shape == (1, 2, waveform.shape[-1] // 160 + 1, 64)
    raw = pipeline.audio_vae.encode(mel).latent_dist.mode()[:, :, :frames]
    expected = pipeline.prepare_audio_latents(latents=raw, noise_scale=0.0, dtype=torch.float32)
    torch.testing.assert_close(packed, expected)
    # And back: the pipeline's unpack + denormalise + decode + vocoder take them.
    latents = ltx2.unpack_audio_latents(
        ltx2.denormalize_audio_latents(
            packed, pipeline.audio_vae.latents_mean, pipeline.audio_vae.latents_std
        ),
        frames,
        num_mel_bins=16,
    )
    with torch.no_grad():
        sound = pipeline.vocoder(pipeline.audio_vae.decode(latents).sample)
    assert sound.shape[1] == 2 and torch.isfinite(sound).all()


# ---------------------------------------------------------------- training step and LoRA


def _sample(pipeline: LTX2Pipeline, with_audio: bool) -> ltx2.LTX2Sample:
    torch.manual_seed(0)
    stored = ltx2.encode_prompts(
        pipeline.tokenizer, pipeline.text_encoder, pipeline.connectors, ["a dog barks", "rain"]
    )
    video_text, audio_text, text_mask = ltx2.collate_text(stored)
    duration = NUM_FRAMES / FPS
    audio = None
    if with_audio:
        audio = ltx2.encode_audio(
            pipeline.audio_vae, torch.randn(2, 2, round(duration * AUDIO_SAMPLE_RATE)) * 0.1, duration
        )
    return ltx2.LTX2Sample(
        video_latents=ltx2.encode_video(pipeline.vae, torch.rand(2, 3, NUM_FRAMES, HEIGHT, WIDTH) * 2 - 1),
        latent_frames=2,
        latent_height=2,
        latent_width=2,
        fps=FPS,
        video_text=video_text,
        audio_text=audio_text,
        text_mask=text_mask,
        audio_latents=audio,
    )


def _add_lora(transformer, targets: list[str], rank: int = 4, alpha: int = 8) -> None:
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=True)
    )


@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_one_lora_step_on_both_streams_trains_every_adapter(
    tiny_ltx2_dirs: dict[str, Path], pipelines, version: str
) -> None:
    # As the shipped templates train: base weights in bf16, adapters in fp32.
    transformer = ltx2.load_component(tiny_ltx2_dirs[version], "transformer", dtype=torch.bfloat16)
    _add_lora(transformer, ltx2.lora_target_modules(feed_forward=True, audio=True, cross_modal=True))
    for name, parameter in transformer.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()
    transformer.train()
    sample = _sample(pipelines[version], with_audio=True)
    inputs = ltx2.flow_matching_inputs(sample, torch.tensor([0.3, 0.8]), torch.Generator().manual_seed(0))
    video_prediction, audio_prediction = ltx2.predict(transformer, inputs)
    assert audio_prediction is not None and audio_prediction.shape == sample.audio_latents.shape
    loss = ltx2.step_loss(inputs, video_prediction, audio_prediction)
    assert torch.isfinite(loss)
    loss.backward()
    adapters = {name: p for name, p in transformer.named_parameters() if "lora_" in name}
    # lora_B starts at zero, so in the first step only the B matrices get gradients.
    without = [
        name
        for name, p in adapters.items()
        if "lora_B" in name and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not without
    assert any("audio_attn1" in name for name in adapters) and any(
        "video_to_audio_attn" in name for name in adapters
    )


def test_video_only_step_ignores_the_audio_stream_and_first_frame_stays_clean(pipelines) -> None:
    pipeline = pipelines["2.0"]
    transformer = pipeline.transformer
    sample = _sample(pipeline, with_audio=False)
    inputs = ltx2.flow_matching_inputs(
        sample, torch.tensor([0.5, 0.9]), torch.Generator().manual_seed(0), condition_first_frame=True
    )
    first = sample.latent_height * sample.latent_width
    torch.testing.assert_close(inputs.noisy_video[:, :first], sample.video_latents[:, :first])
    assert (inputs.video_timesteps[:, :first] == 0).all() and (
        inputs.video_timesteps[:, first:] == torch.tensor([[500.0], [900.0]])
    ).all()
    assert not inputs.video_loss_mask[:, :first].any() and inputs.video_loss_mask[:, first:].all()
    with torch.no_grad():
        video_prediction, audio_prediction = ltx2.predict(transformer, inputs)
        assert audio_prediction is None
        assert torch.isfinite(ltx2.step_loss(inputs, video_prediction, None))
        # The video prediction does not depend on the audio stream at all when there is no audio.
        with_sound = ltx2.LTX2StepInputs(**{**inputs.__dict__, "noisy_audio": torch.randn(2, 28, 32)})
        isolated = transformer(
            hidden_states=inputs.noisy_video,
            audio_hidden_states=with_sound.noisy_audio,
            encoder_hidden_states=sample.video_text,
            audio_encoder_hidden_states=sample.audio_text,
            timestep=inputs.video_timesteps,
            audio_timestep=inputs.sigmas * 1000,
            sigma=inputs.sigmas * 1000,
            encoder_attention_mask=sample.text_mask,
            audio_encoder_attention_mask=sample.text_mask,
            num_frames=2,
            height=2,
            width=2,
            fps=FPS,
            audio_num_frames=28,
            isolate_modalities=True,
            use_cross_timestep=True,
            return_dict=False,
        )[0]
    torch.testing.assert_close(video_prediction, isolated)


@pytest.mark.parametrize(
    ("options", "blocks"),
    [
        ({}, {"attn1", "attn2"}),
        ({"feed_forward": True}, {"attn1", "attn2", "ff"}),
        ({"audio": True}, {"attn1", "attn2", "audio_attn1", "audio_attn2"}),
        (
            {"feed_forward": True, "audio": True, "cross_modal": True},
            {
                "attn1",
                "attn2",
                "audio_attn1",
                "audio_attn2",
                "audio_to_video_attn",
                "video_to_audio_attn",
                "ff",
                "audio_ff",
            },
        ),
    ],
)
def test_lora_presets_adapt_exactly_the_named_modules_inside_the_blocks(
    options: dict, blocks: set[str]
) -> None:
    from diffusers import LTX2VideoTransformer3DModel

    transformer = LTX2VideoTransformer3DModel(**transformer_config("2.3"))
    _add_lora(transformer, ltx2.lora_target_modules(**options))
    adapted = {
        name.rsplit(".lora_A", 1)[0] for name, _ in transformer.named_parameters() if ".lora_A." in name
    }
    assert all(name.startswith("transformer_blocks.") for name in adapted)
    assert {name.split(".")[2] for name in adapted} == blocks
    per_block = 4 * len(blocks - {"ff", "audio_ff"}) + 2 * len(blocks & {"ff", "audio_ff"})
    assert len(adapted) == transformer.config.num_layers * per_block


COMFY_KEY = re.compile(
    r"^diffusion_model\.transformer_blocks\.\d+\."
    r"((attn1|attn2|audio_attn1|audio_attn2|audio_to_video_attn|video_to_audio_attn)\.(to_q|to_k|to_v|to_out\.0)"
    r"|(ff|audio_ff)\.(net\.0\.proj|net\.2))\.lora_[AB]\.weight$"
)


def test_comfyui_file_loads_in_ltx2_pipeline_with_every_key_and_the_trained_deltas(
    tiny_ltx2_dirs: dict[str, Path], tmp_path: Path
) -> None:
    rank, alpha = 4, 12  # scale 3: not a power of two, so folding is checked to float rounding
    transformer = ltx2.load_component(tiny_ltx2_dirs["2.0"], "transformer")
    _add_lora(
        transformer, ltx2.lora_target_modules(feed_forward=True, audio=True, cross_modal=True), rank, alpha
    )
    torch.manual_seed(3)
    for name, parameter in transformer.named_parameters():
        if "lora_" in name:
            parameter.data.normal_(std=0.1)  # stands in for trained weights
    trained = get_peft_model_state_dict(transformer)
    tensors, metadata = ltx2.comfyui_state_dict(trained, rank, alpha)
    assert all(COMFY_KEY.match(key) for key in tensors), [key for key in tensors if not COMFY_KEY.match(key)]
    path = tmp_path / "风格 lora_comfy.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with safe_open(str(path), "pt") as handle:
        assert json.loads(handle.metadata()[ltx2.LTXTRAINER_METADATA_KEY])["rank"] == rank

    pipeline = LTX2Pipeline.from_pretrained(tiny_ltx2_dirs["2.0"])
    pipeline.load_lora_weights(str(path), adapter_name="style")
    loaded = get_peft_model_state_dict(pipeline.transformer, adapter_name="style")
    assert set(loaded) == set(trained)
    scale = alpha / rank
    for key in [key for key in trained if key.endswith("lora_A.weight")]:
        module = key.removesuffix(".lora_A.weight")
        layer = pipeline.transformer.get_submodule(module)
        loaded_delta = loaded[f"{module}.lora_B.weight"] @ loaded[key] * layer.scaling["style"]
        trained_delta = trained[f"{module}.lora_B.weight"] @ trained[key] * scale
        torch.testing.assert_close(loaded_delta, trained_delta)

    with pytest.raises(ltx2.LoraKeyError, match="proj_in"):
        ltx2.comfyui_state_dict({"proj_in.lora_A.weight": torch.zeros(4, 16)}, rank, alpha)


# ---------------------------------------------------------------- LTX-2.5


def test_ltx2_5_folder_from_make_tiny_models_precomputes_trains_and_validates_with_sound(tmp_path: Path) -> None:
    """LTX-2.5 (Gemma 4 text encoder, duration head, bias-free feed-forwards, static prompt modulation)
    from the command users run, through precompute, two int8 bf16 steps and step-0 validation."""
    model = tmp_path / "我的 models" / "tiny-ltx2.5"
    script = runpy.run_path(str(REPO_ROOT / "scripts" / "make_tiny_models.py"))
    argv = sys.argv
    sys.argv = ["make_tiny_models.py", "--family", "ltx2", "--version", "2.5", "--output", str(model)]
    try:
        assert script["main"]() == 0
    finally:
        sys.argv = argv
    index = json.loads((model / "model_index.json").read_text(encoding="utf-8"))
    assert index["text_encoder"][1] == "Gemma4UnifiedForConditionalGeneration"
    assert index["duration_head"][1] == "LTX2DurationHead"
    assert type(ltx2.load_component(model, "text_encoder")).__name__ == "Gemma4UnifiedForConditionalGeneration"

    clip = write_clip_with_sound(tmp_path / "片段 clips" / "clip0.mp4", 0, 330.0)
    data_root = tmp_path / "data"
    precompute_ltx2_samples(
        model, [ClipToEncode(clip, "APT a bright square moves", "clip0")], data_root / ".precomputed",
        SIZE, SIZE, CLIP_FRAMES, with_audio=True,
    )
    output = tmp_path / "run"
    data = run_config(model, data_root, output, with_audio=True, first_frame_p=0.5)
    data["lora"]["target_modules"] = ltx2.lora_target_modules(feed_forward=True, audio=True, cross_modal=True)
    data["optimization"]["steps"] = 2
    data["validation"]["interval"] = 2
    data["acceleration"]["quantization"] = "int8-quanto"  # as the LTX-2 24 GB template ships
    result = run_training(config_from_dict(data))
    assert result.final_step == 2
    assert all(value.abs().sum() > 0 for key, value in load_file(str(result.lora_path)).items() if ".lora_B." in key)
    frames, seconds = streams(next((output / "samples" / "step_000000").glob("*.mp4")))
    assert frames == VALIDATION_FRAMES and seconds > 0.3


def test_folder_check_names_ltx2_5_and_what_its_folder_lacks(tmp_path: Path) -> None:
    model = save_tiny_ltx2_model(tmp_path / "tiny-ltx2.5", version="2.5")
    assert check_model_folder(model).ok
    download = Path(shutil.copytree(model, tmp_path / "LTX-2.5 下载"))
    (download / "ltxtrainer_tiny.json").unlink()
    assert check_model_folder(download).variant == "2.5"
    shutil.rmtree(download / "duration_head")  # named in model_index.json, so the pipeline would load it
    index = json.loads((download / "model_index.json").read_text(encoding="utf-8"))
    index["text_encoder"][1] = "Gemma9ForConditionalGeneration"  # what an older transformers lacks
    (download / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    problems = check_model_folder(download).problems
    assert len(problems) == 2, problems
    assert "missing subfolder duration_head/" in problems[1]
    assert "Gemma9ForConditionalGeneration" in problems[0] and "pip install -U transformers" in problems[0]


def test_the_step_unwraps_the_model_once_per_wrapper_and_keeps_no_finished_model_alive(monkeypatch) -> None:
    import gc
    import weakref

    import accelerate.utils

    calls = []
    real = accelerate.utils.extract_model_from_parallel
    monkeypatch.setattr(accelerate.utils, "extract_model_from_parallel", lambda model: calls.append(model) or real(model))
    base = torch.nn.Linear(2, 2)
    wrapper = torch.nn.DataParallel(base)  # on a CPU it only holds the module, as DDP does
    assert [ltx2.unwrapped(wrapper) for _ in range(3)] == [base] * 3
    assert calls == [wrapper]  # accelerate walks all modules: once per run, not every step
    finished = weakref.ref(base)
    del wrapper, base, calls[:]
    gc.collect()
    assert finished() is None  # the lookup holds neither the wrapper nor the model
