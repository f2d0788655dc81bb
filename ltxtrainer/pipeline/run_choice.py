"""Which run folder a request trains in, and which data it trains on.

A run folder never changes its meaning. A request names its run (`--run-name`), or gets the run of
an identical earlier request (same effective config, so same data key), or a new stamped folder;
`--resume` continues a named run with its own config and data, after checking that data is still
there and unchanged.
"""

from __future__ import annotations

from pathlib import Path

from ltxtrainer.config import ConfigError, TrainerConfig, load_config
from ltxtrainer.dataset_key import data_key, file_stamps, find_media, manifest_digest
from ltxtrainer.pipeline.pipeline_status import DatasetRecords
from ltxtrainer.pipeline.project import (
    CONFIG_FILE,
    ProjectPaths,
    bucket_name,
    new_run_name,
    project_paths,
    project_runs,
    read_json,
)
from ltxtrainer.pipeline.request import REFERENCE_FOLDER, PipelineError, PipelineOptions
from ltxtrainer.pipeline.run_config import (
    RESUMABLE_CHANGES,
    audio_choice,
    build_training_config,
    changed_fields,
    with_overrides,
)
from ltxtrainer.pipeline.stages import caption_plan, outputs_present, split_plan

RESUME_STAGES = ("train", "export")  # the stages that use a run folder, and all that --resume runs


class RunRefused(Exception):
    """A stage cannot run for a reason the caller must act on (exit 2, status "refused")."""


def current_data_key(options: PipelineOptions, paths: ProjectPaths, model: str) -> str:
    """The key of the data this request trains on, from the clips and captions as they are now."""
    from ltxtrainer.models.folder import resolve_model_path

    with_audio = audio_choice(options, paths, model)
    # LTX-2 encodes every caption at Gemma's fixed length, so --max-sequence-length is no part of its data.
    text_length = options.text_length if with_audio is None else None
    key = data_key(paths.scenes_dir, bucket_name(options), text_length, options.on_short,
                   resolve_model_path(model), extra=reference_inputs(options, paths))
    # LTX-2 data (Gemma + connectors, audio latents or none) never shares a folder with 0.9's or
    # with the other audio choice; 0.9 keys stay as they were, so its runs keep their data.
    if with_audio is not None:
        key = f"{key}_ltx2_{'av' if with_audio else 'v'}"
    if options.reference_video:  # IC-LoRA data (reference_latents/) never shares a folder with plain data
        key += f"_ref-{options.kind}" + (f"-d{options.reference_downscale}" if options.reference_downscale != 1 else "")
    return key


def reference_inputs(options: PipelineOptions, paths: ProjectPaths) -> dict | None:
    """What the reference latents are made from, for the data key (None for plain data: its key is unchanged).

    Computed references follow from the clips (already in the key) and the kind; the user's own
    are named by their folder and each file's size and modification time, so editing one makes new data.
    """
    if not options.reference_video:
        return None
    inputs: dict = {"kind": options.kind, "downscale": options.reference_downscale}
    if options.kind == REFERENCE_FOLDER:
        folder = Path(options.reference_dir)
        references = find_media(folder) if folder.is_dir() else []
        inputs.update(folder=str(folder.resolve()), references=file_stamps(folder, references))
    return inputs


def _data_key_or_none(options: PipelineOptions, paths: ProjectPaths, model: str) -> str | None:
    """None while there are no clips yet or the model folder cannot be read (its stage says why)."""
    if not paths.scenes_dir.is_dir():
        return None
    try:
        return current_data_key(options, paths, model)
    except OSError:
        return None


def _dataset_work_pending(options: PipelineOptions, paths: ProjectPaths, requested: tuple[str, ...],
                          records: DatasetRecords) -> bool:
    """Will split or caption do work this time (so the data, and with it the run, may change)?"""
    for stage, plan_of in (("split", split_plan), ("caption", caption_plan)):
        if stage not in requested:
            continue
        plan = plan_of(options, paths)
        old = records.done(stage)
        if plan.refusal or not old or old["fingerprint"] != plan.fingerprint or not outputs_present(stage, paths):
            return True
    return False


def choose_run(options: PipelineOptions, paths: ProjectPaths, requested: tuple[str, ...],
               records: DatasetRecords, model: str) -> ProjectPaths:
    """The run folder of this request: the named one, else the newest run of an identical request
    (whose status then says whether it is finished or continues), else a new stamped folder.

    Also builds the config once, so a typo in an override is refused before any stage runs.
    """
    key = _data_key_or_none(options, paths, model)
    config = build_training_config(options, paths, paths.data_folder(key) if key else paths.precomputed_dir)
    if not any(stage in requested for stage in RESUME_STAGES):
        return paths  # nothing trains or exports: no run folder is used
    if options.run_name:
        if key and paths.config_file.is_file() and not _dataset_work_pending(options, paths, requested, records):
            check_same_run(paths, config)
        return paths
    if key is None or _dataset_work_pending(options, paths, requested, records):
        return project_paths(options, new_run_name(options))
    for run_dir in project_runs(options):
        try:
            saved = load_config(run_dir / CONFIG_FILE)
        except ConfigError:
            continue  # not a run this request could have made
        if not changed_fields(saved, config, ignore=("output_dir",)):
            return project_paths(options, run_dir.name)
    return project_paths(options, new_run_name(options))


def check_same_run(paths: ProjectPaths, config: TrainerConfig) -> None:
    """A named run folder that holds a run of other settings or data is never trained into."""
    try:
        changes = changed_fields(load_config(paths.config_file), config)
    except ConfigError as error:
        changes = [f"(its training_config.yaml cannot be read: {error})"]
    if changes:
        raise RunRefused(
            f"Run {paths.run_name!r} ({paths.run_dir}) holds a run of other settings or data "
            f"(changed: {', '.join(changes)}), so this request cannot train into it. Leave out --run-name "
            "to start a new run folder, name a new one, or continue that run as it is with "
            f"--run-name {paths.run_name} --resume."
        )


def _data_root(folder: Path) -> Path | None:
    """The folder holding latents/ and conditions/: a key folder, or a dataset's old `.precomputed`."""
    for candidate in (folder, folder / ".precomputed"):
        if (candidate / "latents").is_dir() and (candidate / "conditions").is_dir():
            return candidate
    return None


def resume_config(options: PipelineOptions, paths: ProjectPaths) -> TrainerConfig:
    """The named run's own config (with --set changes of steps, validation or checkpoints), after
    checking that the data it trained on is still there and unchanged."""
    if not paths.config_file.is_file():
        raise PipelineError(
            f"There is no run {paths.run_name!r} to resume: {paths.config_file} does not exist. "
            "Pick a run folder from outputs/ (the Runs tab lists them), or leave out --resume to start one."
        )
    status = read_json(paths.status_file)
    if status.get("project") not in (None, options.project):
        raise PipelineError(
            f"Run {paths.run_name!r} belongs to project {status['project']!r}, not {options.project!r}; "
            "resume it under its own project."
        )
    blocking = [key for key in options.overrides if not key.startswith(RESUMABLE_CHANGES)]
    if blocking:
        raise PipelineError(
            f"--resume continues run {paths.run_name!r} with its own settings; only optimization.steps, "
            f"validation.* and checkpoints.* may change, not {', '.join(blocking)}. "
            "Leave out --resume (and --run-name) to train a new run with those settings."
        )
    config = with_overrides(load_config(paths.config_file), options.overrides)
    recorded_root = Path(config.data.preprocessed_data_root)
    data_root = _data_root(recorded_root)
    if data_root is None:
        raise PipelineError(
            f"Run {paths.run_name!r} cannot continue: the data it trained on ({recorded_root}) is gone. "
            "Run the pipeline again without --resume to make the data again and train a new run."
        )
    recorded = status.get("data_manifest_sha256")
    if recorded and manifest_digest(data_root) != recorded:
        raise PipelineError(
            f"Run {paths.run_name!r} cannot continue: the data it trained on ({data_root}) has changed since "
            "(its manifest.json no longer matches), so resuming would train on other data. Run the pipeline "
            "again without --resume to train a new run on the current data."
        )
    return config
