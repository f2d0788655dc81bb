"""Tab 1, 一键训练流水线 / One-click pipeline: make or choose a project, pick a size, start, watch.

The monitor below the form follows the job this tab started (remembered across reloads as the
newest job started here), so its outcome banner stays on screen after it ends, even when the
next queued job has started: finished (LoRA and ComfyUI paths), stopped (checkpoint, how to
continue), failed or refused (the reason first). The queue is listed with a cancel button.
"""

from __future__ import annotations

import gradio as gr

from ltxtrainer.pipeline import TEMPLATES, PipelineError
from ltxtrainer.ui import actions, memory_line, model_choice, monitor
from ltxtrainer.ui.i18n import t
from ltxtrainer.ui.jobs import DuplicateJobError, Job
from ltxtrainer.ui.runs import METRICS_FILE, gallery_items, loss_points, read_jsonl
from ltxtrainer.ui.workspace import UnsafePathError, clip_frame_counts, create_project, list_projects

CAPTIONERS = ("api", "llava", "qwen", "demo")
STEP_KEYS = {step: f"step.{step}" for step in actions.PIPELINE_STEPS}
POLL_S = 1.5
MAX_VIDEOS = 8
TAB = "pipeline"  # job.meta["tab"]: which tab shows a job's outcome
# The default frame count is the largest every clip reaches, but no longer than the templates
# train (activation memory grows with the frame count; longer clips are a deliberate choice).
DEFAULT_FRAMES_CAP = 49
_REFUSED = (PipelineError, UnsafePathError, ValueError, OSError)


def project_choices(ui, lang: str) -> list[tuple[str, str]]:
    return [(t("common.project_choice", lang, name=p.name, clips=p.clips, duration=p.duration_s), p.name)
            for p in list_projects(ui.paths)]


def preselected_project(ui, saved: dict) -> str | None:
    """The last project used, else the only one there is."""
    names = [p.name for p in list_projects(ui.paths)]
    if saved.get("project") in names:
        return saved["project"]
    return names[0] if len(names) == 1 else None


def frame_choices(ui, project: str | None, lang: str) -> tuple[list[tuple[str, int]], list[int]]:
    """Every 8k+1 count, labelled with how many of the project's clips are long enough; and the fitting ones."""
    counts = clip_frame_counts(ui.paths, project) if project else []
    choices, fitting = [], []
    for frames in actions.FRAME_COUNTS:
        if not counts:
            choices.append((str(frames), frames))
            continue
        long_enough = sum(count >= frames for count in counts)
        if long_enough == len(counts):
            fitting.append(frames)
            choices.append((t("frames.fits", lang, count=frames), frames))
        else:
            choices.append((t("frames.partial", lang, count=frames, fit=long_enough, total=len(counts)), frames))
    return choices, fitting


def default_frames(fitting: list[int], current=None) -> int:
    """Keep the chosen count when every clip allows it; else the largest allowed, up to the cap."""
    if current not in (None, ""):
        chosen = int(current)
        if chosen in fitting or not fitting:
            return chosen
    capped = [frames for frames in fitting if frames <= DEFAULT_FRAMES_CAP]
    return capped[-1] if capped else (fitting[0] if fitting else DEFAULT_FRAMES_CAP)


def resolution_choices(lang: str) -> list[tuple[str, str]]:
    return [(f"[{t(key, lang)}] {w}x{h}", f"{w}x{h}") for key, w, h in actions.RESOLUTIONS]


def captioner_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"captioner.{name}", lang), name) for name in CAPTIONERS]


def template_choices(lang: str, family: str | None = None) -> list[tuple[str, str]]:
    """The templates of `family` (every template when None), by their translated names."""
    names = model_choice.family_templates(family) if family else list(TEMPLATES)
    return [(t(f"template.{name}", lang), name) for name in names]


def model_choices(ui, lang: str) -> list[tuple[str, str]]:
    """Each LTX folder under models/ with its family; the templates' folders not downloaded yet marked so."""
    return [(t("pipe.model_choice" if here else "pipe.model_missing", lang, name=name, family=t(f"family.{family}", lang)), name)
            for name, family, here in model_choice.model_folders(ui.paths)]


def audio_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"audio.{name}", lang), name) for name in model_choice.AUDIO_CHOICES]


def preset_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"lora_preset.{name}", lang), name) for name in model_choice.LORA_PRESETS]


def conditioning_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"cond.{name}", lang), name) for name in model_choice.CONDITIONING]


def reference_kind_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"reference_kind.{name}", lang), name) for name in model_choice.REFERENCE_KINDS]


def downscale_choices(lang: str) -> list[tuple[str, int]]:
    return [(t("reference_downscale.choice", lang, factor=factor), factor) for factor in model_choice.REFERENCE_DOWNSCALES]


def form_visibility(family: str, conditioning: str, kind: str) -> dict[str, bool]:
    """Which optional fields a form shows: the LTX-2 ones for an LTX-2 folder, the reference ones for IC-LoRA."""
    ic = conditioning == "reference_video"
    ltx2 = family == model_choice.LTX2
    return {"ltx2": ltx2, "reference": ic, "reference_dir": ic and kind == "folder", "downscale": ic and ltx2}


def step_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(key, lang), step) for step, key in STEP_KEYS.items()]


def on_short_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(f"on_short.{name}", lang), name) for name in actions.ON_SHORT]


def memory_text(ui, template: str, resolution: str, frames, lang: str, model: str | None = None) -> str:
    """The memory line: the template's estimate on the chosen model folder against the detected card, in `lang`."""
    return memory_line.memory_text(ui.paths, template, resolution, frames, lang, memory_line.detect_card(), model)


# ---- the monitor -------------------------------------------------------------------------------


def refusal_html(title: str, error: Exception | str, lang: str) -> str:
    return monitor.banner_html(monitor.Outcome(state="refused", title=title, message=str(error)), lang)


def own_job(ui, job_id: str | None, tab: str) -> Job | None:
    """The job this tab started: the one in the session, else the newest started from this tab."""
    if job_id:
        job = ui.runner.get(job_id)
        if job is not None:
            return job
    return next((job for job in ui.runner.jobs() if job.meta.get("tab") == tab), None)


def tab_outcome_html(ui, job_id: str | None, tab: str, lang: str) -> str:
    """The banner of the newest job started from `tab`: queued, running, finished (where the files are),
    stopped, failed (why); in place of a "Queued:" line that never changes."""
    job = own_job(ui, job_id, tab)
    if job is None:
        return ""
    return monitor.banner_html(monitor.job_outcome(job, ui.runner.events(job.id), ui.runner.read_log(job.id), lang), lang)


RECENT_OUTCOMES = 5


def queue_text(ui, lang: str) -> str:
    """The running job, the queue in order, and how the last few jobs ended (whichever tab started them)."""
    jobs = ui.runner.jobs()
    lines = [t("queue.running", lang, title=monitor.job_title(job, lang)) for job in jobs if job.active]
    lines += [t("queue.row", lang, position=n, title=monitor.job_title(job, lang))
              for n, job in enumerate(ui.runner.queue(), start=1)]
    if not lines:
        lines.append(t("queue.empty", lang))
    ended = [job for job in jobs if job.done][:RECENT_OUTCOMES]
    if ended:
        lines.append(t("queue.recent", lang))
        for job in ended:
            state = monitor.job_outcome(job, ui.runner.events(job.id), "", lang).state
            lines.append(t("queue.ended", lang, title=monitor.job_title(job, lang), state=t(f"status.{state}", lang)))
    return "  \n".join(lines)


def queue_choices(ui, lang: str) -> list[tuple[str, str]]:
    return [(monitor.job_title(job, lang), job.id) for job in ui.runner.queue()]


def loss_and_videos(run_dir, events: list[dict], lang: str):
    """The run's loss (all of metrics.jsonl, so a resumed run shows its whole curve) and videos.

    No points gives None, never an empty frame: gradio 6.31's LinePlot draws no lines at all
    once it was given an empty frame with a colour column, even after real data arrives.
    """
    records = read_jsonl(run_dir / METRICS_FILE) if run_dir else []
    points = loss_points(records or events)
    frame = monitor.loss_frame(points) if points else None
    videos = monitor.gallery_html(gallery_items(run_dir, MAX_VIDEOS) if run_dir else [], lang)
    return frame, videos


def poll(ui, lang: str, job_id: str | None, shown: dict):
    """Everything the monitor shows; plot, gallery and queue choices only when they changed."""
    job = own_job(ui, job_id, TAB)
    events = ui.runner.events(job.id) if job else []
    log = ui.runner.read_log(job.id) if job else ""
    run_dir = monitor.run_dir_of(job, events)
    outcome = monitor.job_outcome(job, events, log, lang) if job else None
    frame, videos = loss_and_videos(run_dir, events, lang)
    queue = queue_choices(ui, lang)
    now = {"job": job.id if job else None, "points": 0 if frame is None else len(frame), "videos": videos,
           "queue": queue, "lang": lang}
    changed = {key: now[key] != shown.get(key) or now["job"] != shown.get("job") or lang != shown.get("lang")
               for key in ("points", "videos", "queue")}
    return (
        monitor.banner_html(outcome, lang),
        monitor.progress_html(monitor.stage_progress(events, job), lang),
        queue_text(ui, lang),
        gr.update(choices=queue, value=None) if changed["queue"] else gr.skip(),
        monitor.log_html(monitor.human_lines(log), t("log.empty", lang)),
        frame if changed["points"] else gr.skip(),
        videos if changed["videos"] else gr.skip(),
        now,
    )


def stop_message(ui, job_id: str | None, lang: str) -> str:
    """Stop this tab's job if it is running or queued, else whatever job runs now."""
    job = own_job(ui, job_id, TAB)
    if job is None or job.done:
        job = ui.runner.current()
    outcome = ui.runner.stop(job.id) if job and not job.done else "nothing"
    return t(f"msg.{outcome}", lang)


def cancel_queued(ui, job_id: str | None, lang: str) -> str:
    if not job_id:
        return t("queue.not_queued", lang)
    job = ui.runner.get(job_id)
    if job is None or not ui.runner.cancel(job_id):
        return t("queue.not_queued", lang)
    return t("queue.cancelled", lang, title=monitor.job_title(job, lang))


def loss_plot(ui, lang: str, elem_id: str) -> gr.LinePlot:
    return ui.tr(
        gr.LinePlot(None, x="step", y="value", color="series", label=t("plot.label", lang),
                    x_title=t("plot.step", lang), y_title=t("plot.loss", lang), height=280, elem_id=elem_id),
        label="plot.label", x_title="plot.step", y_title="plot.loss",
    )


# ---- the tab -----------------------------------------------------------------------------------


def build(ui) -> None:
    lang = ui.language
    saved = ui.settings()
    with ui.tr(gr.Accordion(t("project.new", lang), open=not list_projects(ui.paths)), label="project.new"):
        with gr.Row():
            new_name = ui.tr(gr.Textbox(label=t("project.name", lang), info=t("project.name_info", lang), scale=1),
                             label="project.name", info="project.name_info")
            new_files = ui.tr(gr.File(file_count="multiple", label=t("project.files", lang), scale=2),
                              label="project.files")
        create = ui.tr(gr.Button(t("project.create", lang)), value="project.create")
        created = gr.HTML(elem_id="project-created")
    with gr.Row():
        project = ui.remembered(
            ui.tr(gr.Dropdown(project_choices(ui, lang), value=preselected_project(ui, saved),
                              label=t("common.project", lang), scale=4), label="common.project"),
            "project", lambda saved, lang: {"choices": project_choices(ui, lang), "value": preselected_project(ui, saved)},
        )
        refresh = ui.tr(gr.Button(t("common.refresh", lang), scale=0), value="common.refresh")
    initial_choices, initial_fitting = frame_choices(ui, project.value, lang)
    with gr.Row():
        resolution = ui.remembered(ui.tr(
            gr.Dropdown(resolution_choices(lang), value=saved.get("resolution", "768x512"), allow_custom_value=True,
                        label=t("pipe.resolution", lang), info=t("pipe.resolution_info", lang)),
            choices=resolution_choices, label="pipe.resolution", info="pipe.resolution_info",
        ), "resolution")
        frames = ui.remembered(
            ui.tr(gr.Dropdown(initial_choices, value=default_frames(initial_fitting, saved.get("frames")),
                              allow_custom_value=True, label=t("pipe.frames", lang), info=t("pipe.frames_any", lang)),
                  label="pipe.frames", info="pipe.frames_any",
                  choices=lambda lang: frame_choices(ui, preselected_project(ui, ui.settings()), lang)[0]),
            "frames", lambda saved, lang: _restore_frames(ui, saved, lang),
        )
        on_short = ui.remembered(ui.tr(
            gr.Radio(on_short_choices(lang), value=saved.get("on_short", "shrink"), label=t("pipe.on_short", lang)),
            choices=on_short_choices, label="pipe.on_short",
        ), "on_short")
    # the remembered template, else the one that fits the detected card; the model folder decides the family
    initial_model = _current_model(ui, saved)
    family = model_choice.model_family(ui.paths, initial_model)
    initial_template = model_choice.template_for(family, saved.get("template"),
                                                 memory_line.suggested_template(ui.paths, memory_line.detect_card(), family))
    parts = form_visibility(family, saved.get("conditioning", "none"), saved.get("reference_kind", "canny"))
    with gr.Row():
        model = ui.remembered(ui.tr(
            gr.Dropdown(model_choices(ui, lang), value=initial_model, label=t("pipe.model", lang),
                        info=t("pipe.model_info", lang), scale=2),
            choices=lambda lang: model_choices(ui, lang), label="pipe.model", info="pipe.model_info",
        ), "model", lambda saved, lang: {"choices": model_choices(ui, lang), "value": _current_model(ui, saved)})
        template = ui.remembered(ui.tr(
            gr.Dropdown(template_choices(lang, family), value=initial_template, label=t("pipe.template", lang), scale=2),
            choices=lambda lang: template_choices(lang, _saved_family(ui)), label="pipe.template",
        ), "template", lambda saved, lang: _restore_template(ui, saved, lang))
    with gr.Row(visible=parts["ltx2"]) as ltx2_options:
        audio = ui.remembered(ui.tr(
            gr.Radio(audio_choices(lang), value=saved.get("audio", "auto"), label=t("pipe.audio", lang),
                     info=t("pipe.audio_info", lang)),
            choices=audio_choices, label="pipe.audio", info="pipe.audio_info",
        ), "audio")
        presets = ui.remembered(ui.tr(
            gr.CheckboxGroup(preset_choices(lang), value=saved.get("lora_presets", _template_presets(initial_template)),
                             label=t("pipe.lora_presets", lang), info=t("pipe.lora_presets_info", lang)),
            choices=preset_choices, label="pipe.lora_presets", info="pipe.lora_presets_info",
        ), "lora_presets")
    ui.remembered(ltx2_options, "model", lambda saved, lang: {"visible": _saved_family(ui) == model_choice.LTX2}, save=False)
    with gr.Row():
        conditioning = ui.remembered(ui.tr(
            gr.Radio(conditioning_choices(lang), value=saved.get("conditioning", "none"), label=t("pipe.conditioning", lang),
                     info=t("pipe.conditioning_info", lang)),
            choices=conditioning_choices, label="pipe.conditioning", info="pipe.conditioning_info",
        ), "conditioning")
        reference_kind = ui.remembered(ui.tr(
            gr.Dropdown(reference_kind_choices(lang), value=saved.get("reference_kind", "canny"),
                        label=t("pipe.reference_kind", lang), visible=parts["reference"]),
            choices=reference_kind_choices, label="pipe.reference_kind",
        ), "reference_kind", lambda saved, lang: _restore_visible(ui, saved, "reference_kind", "reference"))
        reference_dir = ui.remembered(ui.tr(
            gr.Textbox(saved.get("reference_dir", ""), label=t("pipe.reference_dir", lang),
                       info=t("pipe.reference_dir_info", lang), visible=parts["reference_dir"]),
            label="pipe.reference_dir", info="pipe.reference_dir_info",
        ), "reference_dir", lambda saved, lang: _restore_visible(ui, saved, "reference_dir", "reference_dir"))
        downscale = ui.remembered(ui.tr(
            gr.Radio(downscale_choices(lang), value=saved.get("reference_downscale", 1),
                     label=t("pipe.reference_downscale", lang), info=t("pipe.reference_downscale_info", lang),
                     visible=parts["downscale"]),
            choices=downscale_choices, label="pipe.reference_downscale", info="pipe.reference_downscale_info",
        ), "reference_downscale", lambda saved, lang: _restore_visible(ui, saved, "reference_downscale", "downscale"))
    with gr.Row():
        steps = ui.remembered(ui.tr(
            gr.CheckboxGroup(step_choices(lang), value=saved.get("steps", list(actions.PIPELINE_STEPS)),
                             label=t("pipe.steps", lang), scale=2),
            choices=step_choices, label="pipe.steps",
        ), "steps")
        train_steps = ui.remembered(ui.tr(
            gr.Number(saved.get("train_steps", 0), label=t("pipe.train_steps", lang), precision=0, minimum=0, scale=1),
            label="pipe.train_steps"), "train_steps")
        run_name = ui.tr(gr.Textbox(label=t("pipe.run_name", lang), info=t("pipe.run_name_info", lang), scale=1),
                         label="pipe.run_name", info="pipe.run_name_info")
    with gr.Row():
        captioner = ui.remembered(ui.tr(gr.Dropdown(captioner_choices(lang), value=saved.get("captioner", "api"),
                                                    label=t("common.captioner", lang)),
                                        choices=captioner_choices, label="common.captioner"), "captioner")
        api_base_url = ui.remembered(ui.tr(gr.Textbox(saved.get("api_base_url", "https://api.moonshot.cn/v1"),
                                                      label=t("common.api_base_url", lang)),
                                           label="common.api_base_url"), "api_base_url")
        api_model = ui.remembered(ui.tr(gr.Textbox(saved.get("api_model", "moonshot-v1-8k-vision-preview"),
                                                   label=t("common.api_model", lang)), label="common.api_model"),
                                  "api_model")
        api_key = ui.tr(gr.Textbox("", type="password", label=t("common.api_key", lang),
                                   info=t("common.api_key_info", lang)), label="common.api_key", info="common.api_key_info")
    memory = gr.Markdown(memory_text(ui, template.value, resolution.value, frames.value, lang, model.value))
    with gr.Row():
        start = ui.tr(gr.Button(t("pipe.start", lang), variant="primary"), value="pipe.start")
        stop = ui.tr(gr.Button(t("pipe.stop", lang), variant="stop"), value="pipe.stop")
    message = gr.HTML(elem_id="pipeline-message")
    banner = gr.HTML(elem_id="pipeline-banner")
    progress = gr.HTML(elem_id="pipeline-progress")
    with gr.Row():
        with gr.Column(scale=3):
            log = gr.HTML(elem_id="pipeline-log")
        with gr.Column(scale=1, min_width=260):
            queue = gr.Markdown(t("queue.empty", lang))
            queued = ui.tr(gr.Dropdown([], label=t("queue.pick", lang)), label="queue.pick")
            cancel = ui.tr(gr.Button(t("queue.cancel", lang), size="sm"), value="queue.cancel")
    with gr.Row():
        with gr.Column():
            loss = loss_plot(ui, lang, "pipeline-loss")
        with gr.Column():
            videos = gr.HTML(elem_id="pipeline-videos")
    job_id = gr.State(None)
    shown = gr.State({})

    def refresh_projects(lang):
        return gr.update(choices=project_choices(ui, lang))

    def create_new_project(name, files, lang):
        try:
            folder = create_project(ui.paths, name, files or [])
        except _REFUSED as error:
            return refusal_html(t("project.create", lang), error, lang), gr.skip()
        ui.remember(project=folder.name)
        text = t("project.created", lang, name=folder.name, count=len(files), path=folder)
        return (monitor.banner_html(monitor.Outcome(state="finished", title=text), lang),
                gr.update(choices=project_choices(ui, lang), value=folder.name))

    def project_frames(project, current, lang):
        choices, fitting = frame_choices(ui, project, lang)
        return gr.update(choices=choices, value=default_frames(fitting, current))

    def estimate(template, resolution, frames, model, lang):
        return memory_text(ui, template, resolution, frames, lang, model)

    def follow_model(model, current, lang):
        """The chosen folder's family: its templates (the current one kept when it fits), its options shown,
        and the LoRA targets of a template it switched to."""
        family = model_choice.model_family(ui.paths, model)
        value = model_choice.template_for(family, current,
                                          memory_line.suggested_template(ui.paths, memory_line.detect_card(), family))
        return (gr.update(choices=template_choices(lang, family), value=value),
                gr.update(visible=family == model_choice.LTX2),
                _template_presets(value) if value != current else gr.skip())

    def show_reference_fields(model, conditioning, kind):
        visible = form_visibility(model_choice.model_family(ui.paths, model), conditioning, kind)
        return (gr.update(visible=visible["reference"]), gr.update(visible=visible["reference_dir"]),
                gr.update(visible=visible["downscale"]))

    def start_job(project, resolution, frames, on_short, steps, train_steps, run_name, template, captioner, api_base_url,
                  api_model, api_key, model, audio, presets, conditioning, reference_kind, reference_dir, downscale, lang):
        title = t("pipe.start", lang)
        if not project:
            return refusal_html(title, t("msg.no_project", lang), lang), gr.skip()
        if not steps:
            return refusal_html(title, t("msg.no_steps", lang), lang), gr.skip()
        try:
            job = actions.start_pipeline(
                ui.runner, ui.paths, project=project, resolution=resolution, frames=int(frames), steps=list(steps),
                template=template, captioner=captioner, api_base_url=api_base_url, api_model=api_model,
                api_key=api_key, run_name=run_name, on_short=on_short, train_steps=train_steps, tab=TAB,
                model=model, audio=audio, lora_presets=list(presets or []), conditioning=conditioning,
                reference_kind=reference_kind, reference_dir=reference_dir, reference_downscale=downscale,
            )
        except DuplicateJobError as error:
            return refusal_html(title, t("msg.duplicate", lang, title=monitor.job_title(error.existing, lang)), lang), gr.skip()
        except _REFUSED as error:
            return refusal_html(title, error, lang), gr.skip()
        return "", job.id

    form = [project, resolution, frames, on_short, steps, train_steps, run_name, template, captioner, api_base_url, api_model,
            api_key, model, audio, presets, conditioning, reference_kind, reference_dir, downscale, ui.lang]
    refresh.click(refresh_projects, inputs=ui.lang, outputs=project, api_name="list_projects")
    ui.on_show(project, refresh_projects)
    create.click(create_new_project, inputs=[new_name, new_files, ui.lang], outputs=[created, project],
                 api_name="create_project")
    project.change(project_frames, inputs=[project, frames, ui.lang], outputs=frames, api_visibility="private",
                   show_progress="hidden")
    # ui.lang changes on the language switch and when a page opens with the remembered language
    for trigger in (template.change, resolution.change, frames.change, ui.lang.change):
        trigger(estimate, inputs=[template, resolution, frames, model, ui.lang], outputs=memory, api_visibility="private",
                show_progress="hidden")
    # One chain per folder change: the template list first, so no later step reads a template of the old family.
    model.change(follow_model, inputs=[model, template, ui.lang], outputs=[template, ltx2_options, presets],
                 api_visibility="private", show_progress="hidden").then(
        estimate, inputs=[template, resolution, frames, model, ui.lang], outputs=memory, api_visibility="private",
        show_progress="hidden").then(
        show_reference_fields, inputs=[model, conditioning, reference_kind],
        outputs=[reference_kind, reference_dir, downscale], api_visibility="private", show_progress="hidden")
    conditioning.change(show_reference_fields, inputs=[model, conditioning, reference_kind],
                        outputs=[reference_kind, reference_dir, downscale], api_visibility="private", show_progress="hidden")
    # the kind shows or hides only the folder (an update of the kind's own dropdown from its change would loop)
    reference_kind.change(lambda model, conditioning, kind: show_reference_fields(model, conditioning, kind)[1],
                          inputs=[model, conditioning, reference_kind], outputs=reference_dir, api_visibility="private",
                          show_progress="hidden")
    start.click(start_job, inputs=form, outputs=[message, job_id], api_name="start_pipeline")
    stop.click(lambda job, lang: stop_message(ui, job, lang), inputs=[job_id, ui.lang], outputs=message,
               api_name="stop_job")
    cancel.click(lambda chosen, lang: cancel_queued(ui, chosen, lang), inputs=[queued, ui.lang], outputs=message,
                 api_name="cancel_job")

    monitor_outputs = [banner, progress, queue, queued, log, loss, videos, shown]
    timer = gr.Timer(POLL_S)
    timer.tick(lambda lang, job, seen: poll(ui, lang, job, seen), inputs=[ui.lang, job_id, shown],
               outputs=monitor_outputs, api_name="poll_job", show_progress="hidden")


def _current_model(ui, saved: dict) -> str | None:
    """The folder a page shows: the remembered one, else the remembered or suggested template's."""
    template = saved.get("template") or memory_line.suggested_template(ui.paths, memory_line.detect_card())
    return model_choice.default_model(ui.paths, saved, template)


def _saved_family(ui) -> str:
    return model_choice.model_family(ui.paths, _current_model(ui, ui.settings()))


def _template_presets(template: str) -> list[str]:
    return model_choice.template_presets(template) if model_choice.template_family(template) == model_choice.LTX2 else []


def _restore_template(ui, saved: dict, lang: str) -> dict:
    """The family's templates and the remembered one when it is of that family (a page reload)."""
    family = _saved_family(ui)
    suggested = memory_line.suggested_template(ui.paths, memory_line.detect_card(), family)
    return {"choices": template_choices(lang, family), "value": model_choice.template_for(family, saved.get("template"),
                                                                                          suggested)}


def _restore_visible(ui, saved: dict, key: str, part: str) -> dict:
    """A remembered optional field, shown when the remembered folder and conditioning call for it."""
    visible = form_visibility(_saved_family(ui), saved.get("conditioning", "none"), saved.get("reference_kind", "canny"))
    return {**({"value": saved[key]} if key in saved else {}), "visible": visible[part]}


def _restore_frames(ui, saved: dict, lang: str) -> dict:
    choices, fitting = frame_choices(ui, preselected_project(ui, saved), lang)
    return {"choices": choices, "value": default_frames(fitting, saved.get("frames"))}
