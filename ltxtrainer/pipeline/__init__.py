"""One-click pipeline: split -> caption -> [reference] -> preprocess -> train -> ComfyUI export, one subprocess per stage.

Modules: `request` (the options and their checks), `project` (folders and run names),
`run_config` (the effective training config), `stages` (each stage's arguments, fingerprint and
artefacts), `stage_process` (running a stage script, stop requests), `pipeline_status` (the
status file and the dataset records), `run_choice` (which run folder and which data a request
trains on), `runner` (running the stages and reporting how the request ended).

Folders of a project whose trigger word is T:

    train_date/T/                         the raw videos (the seed GUI's project folder)
    datasets/T/scenes/                    one clip per scene, captions.json and a .txt per clip
    datasets/T/scenes/.precomputed/KEY/   latents/, conditions/, manifest.json: one folder per data
                                          key, e.g. `768x512x49_t256_3fa9c01b2e` (`dataset_key`); an
                                          older `.precomputed/latents/` is still read by runs that
                                          name it. LTX-2 keys have no `_t256` and end `_ltx2_av` or
                                          `_ltx2_v`; IC-LoRA keys end `_ref-KIND[-dN]` and hold
                                          reference_latents/ too
    datasets/T/references_KIND/           IC-LoRA: the references the reference stage computed
    datasets/T/dataset_stages.json        what split, caption and preprocess (per key) last did
    datasets/T/pipeline_status.json       the status of a pipeline run that trains nothing
    outputs/RUN/                          one run: training_config.yaml (data.preprocessed_data_root
                                          = its KEY folder), pipeline_status.json, metrics.jsonl,
                                          checkpoints/, samples/, lora_weights.safetensors,
                                          RUN_comfy.safetensors

Run folders never change their meaning. RUN is `--run-name NAME` or, by default, the newest run
of an identical request (same effective config, data key included), else a new
`T_WxHxF_YYYYMMDD-HHMMSS`. So the same request again is idempotent (a finished run: train skipped,
export done if missing; a stopped run: continued from its latest checkpoint), and a changed one
(an edited caption, another resolution, another setting) trains a new run beside the old ones.
A named run that holds other settings or data is refused, never overwritten. `--run-name NAME
--resume` continues that run with its own config and its own data (only optimization.steps,
validation.* and checkpoints.* may change with --set); it refuses when that data is gone or its
manifest changed. Split and caption results are shared by every run of the project.

Command line (scripts/run_pipeline.py): `PROJECT --resolution WxH --frames F [--run-name NAME]
[--resume] [--on-short shrink|skip] [--max-sequence-length 256] [--conditioning none|reference_video
--reference-kind canny|blur|gray|downscale|folder [--reference-dir DIR] [--reference-downscale 1|2|4]] ...`. Exit codes: 0 finished,
1 a stage failed, 2 refused, 130 stopped (Ctrl+C, SIGTERM, or the job's stop file
`LTXT_STOP_FILE`, which the running stage also sees; no later stage starts).

JSON lines on stdout (one object each, `ltxtrainer.progress.emit`):
- first: `{"event": "pipeline_start", "project", "run_name", "run_dir", "status_file", "stages",
  "resume"}` (run_name and run_dir are null when no stage trains or exports); a request refused
  before it starts emits no pipeline_start, only the pipeline_end;
- then `pipeline` (a stage's status: running, done, skipped, failed, stopped), the stages' own
  `progress`, `summary`, training `train_start`/`step`/`validation`/`checkpoint`/`train_end`,
  each tagged with its `stage`, and `error` before an unsuccessful end;
- last: `{"event": "pipeline_end", "status": "finished"|"stopped"|"failed"|"refused", "run_name",
  "run_dir", "lora", "comfyui_lora", "checkpoint", "stage", "message"}`: the message is one
  paragraph, the reason first (failed, refused), for stopped the checkpoint and the exact way to
  continue, for finished where the LoRA and the ComfyUI file are.
`pipeline_status.json` holds `project`, `run_name`, `data_key`, `precomputed_dir`,
`data_manifest_sha256`, `state` (running, finished, stopped, failed, refused), `error` and every
stage's status, message, times and artefacts.
"""

from ltxtrainer.pipeline.project import (
    CONFIG_FILE,
    LORA_FILE,
    STATUS_FILE,
    ProjectPaths,
    new_run_name,
    project_paths,
    project_runs,
)
from ltxtrainer.pipeline.request import (
    CAPTIONERS,
    CONDITIONING_MODES,
    DEFAULT_REFERENCE_KIND,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
    ON_SHORT,
    REPO_ROOT,
    STAGES,
    TEMPLATES,
    PipelineError,
    PipelineOptions,
    check_dimensions,
    check_project_name,
    check_run_name,
    options_from_overrides,
    parse_override,
    parse_resolution,
    parse_steps,
)
from ltxtrainer.pipeline.run_config import build_training_config, changed_fields, template_path
from ltxtrainer.pipeline.runner import refuse, run_pipeline
from ltxtrainer.pipeline.stage_process import error_paragraph

__all__ = [
    "CAPTIONERS", "CONDITIONING_MODES", "CONFIG_FILE", "DEFAULT_REFERENCE_KIND", "EXIT_FAILED", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "LORA_FILE", "ON_SHORT",
    "REPO_ROOT", "STAGES", "STATUS_FILE", "TEMPLATES", "PipelineError", "PipelineOptions", "ProjectPaths",
    "build_training_config", "changed_fields", "check_dimensions", "check_project_name", "check_run_name",
    "error_paragraph", "new_run_name", "options_from_overrides", "parse_override", "parse_resolution",
    "parse_steps", "project_paths", "project_runs", "refuse", "run_pipeline", "template_path",
]
