"""Running a request: choose its run folder, run or skip each stage, report how it ended."""

from __future__ import annotations

import os
from pathlib import Path

from ltxtrainer.config import ConfigError, TrainerConfig, config_to_yaml, save_config
from ltxtrainer.dataset_key import MANIFEST, manifest_digest
from ltxtrainer.pipeline.pipeline_status import DatasetRecords, RunStatus, now
from ltxtrainer.pipeline.project import (
    ProjectPaths,
    project_paths,
    reference_folder,
)
from ltxtrainer.pipeline.request import (
    DATASET_STAGES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
    REPO_ROOT,
    STAGE_SCRIPTS,
    PipelineError,
    PipelineOptions,
    check_conditioning_family,
    check_request,
    requested_stages,
)
from ltxtrainer.pipeline.run_choice import (
    RESUME_STAGES,
    RunRefused,
    check_same_run,
    choose_run,
    current_data_key,
    resume_config,
)
from ltxtrainer.pipeline.run_config import (
    build_training_config,
    missing_references,
    model_family,
    model_source,
)
from ltxtrainer.pipeline.stage_process import (
    Redactor,
    StageResult,
    StopForwarder,
    child_environment,
    error_paragraph,
    run_stage_process,
)
from ltxtrainer.pipeline.stages import (
    Plan,
    caption_plan,
    digest,
    export_plan,
    latest_checkpoint,
    latest_checkpoint_step,
    outputs_present,
    preprocess_plan,
    reference_plan,
    split_plan,
    stage_artefacts,
)
from ltxtrainer.progress import emit, say


class _PipelineRun:
    """One pipeline process: the stages in order, each run, skipped or refused, and the outcome."""

    def __init__(self, options: PipelineOptions, paths: ProjectPaths, requested: tuple[str, ...],
                 records: DatasetRecords, model: str, resume_with: TrainerConfig | None):
        self.options, self.paths, self.requested, self.records, self.model = options, paths, requested, records, model
        self.resume_with = resume_with
        self.trains = any(stage in requested for stage in RESUME_STAGES)
        self.redact = Redactor(options.api_key or os.environ.get(options.api_key_env))
        self.env = child_environment(options)
        self.status = RunStatus(options, paths, requested, self.trains)
        self.data_key: str | None = None

    def run(self) -> int:
        options, paths = self.options, self.paths
        emit("pipeline_start", project=options.project, run_name=paths.run_name if self.trains else None,
             run_dir=str(paths.run_dir) if self.trains else None, status_file=str(self.status.path),
             stages=list(self.requested), resume=options.resume)
        where = f"run folder {paths.run_dir}" if self.trains else f"status in {self.status.path}"
        say(f"Pipeline for {options.project!r}: {', '.join(self.requested)}; {where}")
        with StopForwarder() as stop:
            for stage in self.requested:
                if stop.poll():
                    return self._stopped(stage, started=False)
                try:
                    code = self._stage(stage, stop)
                except RunRefused as refusal:
                    self.status.update(stage, status="failed", finished_at=now(), message=str(refusal))
                    return self._end("refused", stage, str(refusal), EXIT_USAGE)
                if code is not None:
                    return code
        return self._finished()

    # --- one stage -------------------------------------------------------------------------------

    def _stage(self, stage: str, stop: StopForwarder) -> int | None:
        """Run or skip `stage`; an exit code when the pipeline must end here, else None."""
        started = now()
        plan = self._plan(stage)
        if plan is None:  # skipped: its work is done and its inputs did not change
            return None
        if plan.refusal:
            self.status.update(stage, status="failed", started_at=started, finished_at=now(), message=plan.refusal)
            return self._end("failed", stage, plan.refusal, EXIT_FAILED)
        if plan.arguments is None:  # a check with no process to run (the user's own references)
            self._done(stage, plan, plan.message or "done")
            return None
        if stage == "train":
            save_config(plan.config, self.paths.config_file)
            data_dir = Path(plan.config.data.preprocessed_data_root)
            self.status.set_data(self.data_key or self.status.data["data_key"], data_dir, manifest_digest(data_dir))
        self.status.update(stage, status="running", started_at=started, message=f"running {STAGE_SCRIPTS[stage]}",
                           code="running", values={"script": STAGE_SCRIPTS[stage]})
        result = run_stage_process(stage, plan.arguments, self.env, self.redact, stop)
        if result.returncode != 0:
            return self._stage_failed(stage, result, stop)
        self._done(stage, plan, _success_message(result))
        return None

    def _done(self, stage: str, plan: Plan, message: str) -> None:
        finished = now()
        artefacts = self._artefacts(stage)
        self.status.update(stage, status="done", finished_at=finished, message=message,
                           artefacts=artefacts, fingerprint=plan.fingerprint, done_at=finished)
        if stage in DATASET_STAGES:
            self.records.record(stage, self._record_key(stage), plan.fingerprint, finished, artefacts)

    def _record_key(self, stage: str) -> str | None:
        """Which record of a dataset stage this request's work is: one per reference kind, one per data key."""
        return self.options.kind if stage == "reference" else self.data_key

    def _artefacts(self, stage: str) -> dict:
        return stage_artefacts(stage, self.paths, self._data_dir(), reference_folder(self.options, self.paths))

    def _data_dir(self) -> Path | None:
        if self.resume_with is not None:
            return Path(self.resume_with.data.preprocessed_data_root)
        return self.paths.data_folder(self.data_key) if self.data_key else None

    def _skip(self, stage: str, message: str, fingerprint: str | None, done_at: str, artefacts: dict,
              code: str = "already_done", values: dict | None = None) -> None:
        self.status.update(stage, status="skipped", started_at=now(), finished_at=now(), message=message,
                           artefacts=artefacts, fingerprint=fingerprint, done_at=done_at,
                           code=code, values={"at": done_at, **(values or {})})
        say(f"[{stage}] skipped: {message}")

    def _plan(self, stage: str) -> Plan | None:
        """The stage's plan, or None after recording it as skipped."""
        options, paths = self.options, self.paths
        if stage in ("split", "caption"):
            plan = split_plan(options, paths) if stage == "split" else caption_plan(options, paths)
            old = self.records.done(stage)
            if not plan.refusal and old and old["fingerprint"] == plan.fingerprint and outputs_present(stage, paths):
                self._skip(stage, f"already done at {old['done_at']}; its inputs have not changed",
                           plan.fingerprint, old["done_at"], old.get("artefacts", {}))
                return None
            return plan
        if stage == "reference":
            plan = reference_plan(options, paths)
            old = self.records.done(stage, options.kind)
            if (not plan.refusal and old and old["fingerprint"] == plan.fingerprint
                    and not missing_references(options, paths)):
                self._skip(stage, f"already done at {old['done_at']}; the clips have not changed",
                           plan.fingerprint, old["done_at"], self._artefacts(stage))
                return None
            return plan
        if stage == "preprocess":
            refusal = self._find_data_key()
            if refusal:
                return Plan(refusal=refusal)
            plan = preprocess_plan(options, paths, self.model, self.data_key)
            old = self.records.done("preprocess", self.data_key)
            data_dir = self._data_dir()
            made = outputs_present("preprocess", paths, data_dir, with_references=options.reference_video)
            if old and old["fingerprint"] == plan.fingerprint and made:
                self._skip(stage, f"already done at {old['done_at']} into {data_dir.name}; its inputs have not changed",
                           plan.fingerprint, old["done_at"], self._artefacts(stage),
                           code="already_done_into", values={"data": data_dir.name})
                return None
            return plan
        if stage == "train":
            return self._train_plan()
        plan = export_plan(paths)
        old = self.status.previous_done("export")
        if not plan.refusal and old and old["fingerprint"] == plan.fingerprint and outputs_present("export", paths):
            self._skip(stage, f"already done at {old['done_at']}; the LoRA has not changed",
                       plan.fingerprint, old["done_at"], old.get("artefacts", {}), code="lora_unchanged")
            return None
        return plan

    def _find_data_key(self) -> str | None:
        """Set `data_key` from the clips and captions as they are now; a refusal when it cannot be made."""
        if self.data_key is not None:
            return None
        from ltxtrainer.models.folder import check_model_folder

        try:
            self.data_key = current_data_key(self.options, self.paths, self.model)
        except OSError as error:
            report = check_model_folder(self.model)
            return report.message() if not report.ok else f"Cannot read the clips or the model files: {error}"
        if not self.trains:  # a run's status names only the data its training uses (set when it starts)
            data_dir = self.paths.data_folder(self.data_key)
            self.status.set_data(self.data_key, data_dir, manifest_digest(data_dir))
        return None

    def _train_plan(self) -> Plan | None:
        """Train a new run, continue a stopped one, or skip a finished one; never mix two runs' settings."""
        paths = self.paths
        if self.resume_with is not None:
            config = self.resume_with
        else:
            refusal = self._find_data_key()
            if refusal:
                return Plan(refusal=refusal)
            data_dir = self._data_dir()
            if not (data_dir / MANIFEST).is_file():
                return Plan(refusal=(
                    f"No precomputed data for this request in {data_dir}: run the preprocess step first (the data "
                    "depends on the clips, their captions, the resolution, the frame count and the text length)."
                ))
            try:
                config = build_training_config(self.options, paths, data_dir)
            except (PipelineError, ConfigError) as error:
                return Plan(refusal=str(error))
            if paths.config_file.is_file():
                check_same_run(paths, config)
        fingerprint = digest(config_to_yaml(config))
        step = latest_checkpoint_step(paths.run_dir)
        if paths.lora_file.is_file() and step is not None and step >= config.optimization.steps:
            old = self.status.previous_done("train")
            done_at = old["done_at"] if old else now()
            self._skip("train", f"already trained to step {step} (of {config.optimization.steps}); nothing to continue",
                       fingerprint, done_at, stage_artefacts("train", paths), code="already_trained",
                       values={"step": step, "total": config.optimization.steps})
            return None
        arguments = [str(paths.config_file)] + (["--resume"] if step is not None else [])
        return Plan(arguments, fingerprint, config=config)

    # --- endings ---------------------------------------------------------------------------------

    def _stage_failed(self, stage: str, result: StageResult, stop: StopForwarder) -> int:
        message = self.redact(result.error_event or error_paragraph(result.stderr_lines)
                              or f"{STAGE_SCRIPTS[stage]} exited with code {result.returncode}")
        artefacts = self._artefacts(stage)
        if stop.poll() or result.returncode == EXIT_STOPPED:
            self.status.update(stage, status="stopped", finished_at=now(), message=self._stop_message(stage, True),
                               artefacts=artefacts)
            return self._stopped(stage, started=True)
        self.status.update(stage, status="failed", finished_at=now(), message=message, artefacts=artefacts)
        return self._end("failed", stage, message, EXIT_FAILED)

    def _stop_message(self, stage: str, started: bool) -> str:
        when = "during" if started else "before"
        if stage == "train" or (stage == "export" and not started):
            checkpoint = latest_checkpoint(self.paths.run_dir)
            kept = (f"The latest checkpoint is {checkpoint}." if checkpoint
                    else "No checkpoint was saved yet, so continuing starts at step 0.")
            outputs = Path(self.options.outputs_dir)
            elsewhere = "" if outputs.resolve() == (REPO_ROOT / "outputs").resolve() else f' --outputs-dir "{outputs}"'
            return (f"Stopped by the user {when} the {stage} stage. {kept} To continue this run: run_pipeline.py "
                    f"{self.options.project} --run-name {self.paths.run_name} --resume{elsewhere} (the Runs tab's "
                    "Resume does the same), or run the same request again.")
        return (f"Stopped by the user {when} the {stage} stage; the work of the finished stages is kept. "
                "Run the same request again to continue from there.")

    def _stopped(self, stage: str, started: bool) -> int:
        return self._end("stopped", stage, self._stop_message(stage, started), EXIT_STOPPED)

    def _finished(self) -> int:
        for stage in self.requested:
            for key, value in self.status.data["stages"][stage]["artefacts"].items():
                if value and key in ("scenes_dir", "captions_file", "precomputed_dir", "config", "lora", "comfyui_lora"):
                    say(f"  {key:15} {value}")
        say(f"Pipeline finished; status in {self.status.path}")
        paths = self.paths
        if self.trains and paths.comfy_file.is_file():
            message = f"Run {paths.run_name} is finished: the LoRA is {paths.lora_file}, for ComfyUI {paths.comfy_file}."
        else:
            message = f"Finished {', '.join(self.requested)}; status in {self.status.path}."
        return self._end("finished", None, message, EXIT_OK)

    def _end(self, state: str, stage: str | None, message: str, code: int) -> int:
        self.status.finish(state, {"stage": stage, "message": message} if stage and state != "finished" else None)
        if state != "finished":
            say(f"Pipeline {state} at stage '{stage}': {message}")
            emit("error", stage=stage, message=message, status_file=str(self.status.path))
        end_event(state, self.paths if self.trains else None, stage, message)
        return code


def _success_message(result: StageResult) -> str:
    lines = [line.strip() for line in result.stderr_lines if line.strip()]
    return lines[-1] if lines else "done"


def end_event(state: str, paths: ProjectPaths | None, stage: str | None, message: str) -> None:
    """The last JSON line of every pipeline process: how it ended and where its results are."""
    checkpoint = latest_checkpoint(paths.run_dir) if paths else None
    emit("pipeline_end", status=state, run_name=paths.run_name if paths else None,
         run_dir=str(paths.run_dir) if paths else None,
         lora=str(paths.lora_file) if paths and paths.lora_file.is_file() else None,
         comfyui_lora=str(paths.comfy_file) if paths and paths.comfy_file.is_file() else None,
         checkpoint=str(checkpoint) if checkpoint else None, stage=stage, message=message)


def refuse(message: str, paths: ProjectPaths | None = None) -> int:
    """A request refused before any stage starts: its reason on stderr and as the pipeline's end."""
    say(message)
    emit("error", stage="pipeline", message=message)
    end_event("refused", paths, None, message)
    return EXIT_USAGE


def run_pipeline(options: PipelineOptions) -> int:
    """Run the requested stages in order; returns 0 done, 1 a stage failed, 2 refused, 130 stopped."""
    paths = None
    try:
        check_request(options)
        requested = RESUME_STAGES if options.resume else requested_stages(options)
        paths = project_paths(options)
        records = DatasetRecords(paths.dataset_records)
        model = model_source(options)
        check_conditioning_family(options, model_family(model))
        if options.resume:
            resume_with = resume_config(options, paths)
        else:
            resume_with = None
            paths = choose_run(options, paths, requested, records, model)
    except (PipelineError, ConfigError, RunRefused) as error:
        return refuse(str(error), paths if options.run_name and paths else None)
    return _PipelineRun(options, paths, requested, records, model, resume_with).run()
