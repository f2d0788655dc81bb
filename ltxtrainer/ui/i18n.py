"""Every label, hint and message of the GUI, in Chinese and English.

Tab names and labels follow the seed GUI our users know (一键训练流水线, [横版]/[竖版]/[方形], ...).
The default language comes from the system locale; the switch in the header changes it live and
is remembered. Messages from the config schema are shown as the schema writes them (English
field paths), under a translated heading, so they match what the command line prints.
"""

from __future__ import annotations

import locale
import os

LANGUAGES = ("zh", "en")
LANGUAGE_NAMES = {"zh": "中文", "en": "English"}

STRINGS: dict[str, tuple[str, str]] = {
    # header and tabs
    "app.title": ("# LTX-Video LoRA 训练器", "# LTX-Video LoRA Trainer"),
    "app.language": ("语言 / Language", "Language / 语言"),
    "tab.pipeline": ("一键训练流水线", "One-click pipeline"),
    "tab.advanced": ("高级训练参数", "Advanced parameters"),
    "tab.dataset": ("数据集与标注", "Dataset and captions"),
    "tab.runs": ("训练监控", "Runs"),
    "tab.export": ("转换为ComfyUI格式", "ComfyUI export"),
    "tab.environment": ("环境与模型", "Environment and models"),
    "header.checking": ("正在检查 GPU 与模型…", "Checking the GPU and models…"),
    "header.gpu": ("GPU：{name}，显存 {free} / {total} GB 可用", "GPU: {name}, {free} / {total} GB free"),
    "header.no_gpu": ("未检测到可用的 GPU：训练将在 CPU 上运行（只适合微型演示）",
                      "No usable GPU: training runs on the CPU (fine for the tiny demo only)"),
    "header.no_models": ("models/ 中没有模型文件夹", "No model folders in models/"),
    # common
    "common.refresh": ("刷新", "Refresh"),
    "common.project": ("项目（train_date 中的文件夹，名称即触发词）",
                       "Project (a folder in train_date; its name is the trigger word)"),
    "common.project_choice": ("{name}（{clips} 个视频，共 {duration:.1f} 秒）", "{name} ({clips} clips, {duration:.1f} s)"),
    "common.captioner": ("标注方式", "Captioner"),
    "common.api_base_url": ("API 地址（OpenAI 兼容）", "API base URL (OpenAI-compatible)"),
    "common.api_model": ("API 模型名称", "API model name"),
    "common.api_key": ("API 密钥", "API key"),
    "common.api_key_info": ("只通过环境变量交给标注子进程，从不写入磁盘、设置或日志",
                            "Passed to the captioning process in its environment only; never written to disk, settings or logs"),
    "captioner.api": ("API（OpenAI 兼容，如 Kimi）", "API (OpenAI-compatible, e.g. Kimi)"),
    "captioner.llava": ("本地 LLaVA-NeXT-Video", "Local LLaVA-NeXT-Video"),
    "captioner.qwen": ("本地 Qwen2-VL", "Local Qwen2-VL"),
    "captioner.demo": ("演示标注（无需模型）", "Demo captions (no model needed)"),
    # pipeline tab
    "pipe.resolution": ("分辨率", "Resolution"),
    "pipe.resolution_info": ("宽x高，均为 32 的倍数；也可以直接输入", "WxH, multiples of 32; you may also type one"),
    "res.landscape": ("横版", "landscape"),
    "res.portrait": ("竖版", "portrait"),
    "res.square": ("方形", "square"),
    "pipe.frames": ("帧数", "Frames"),
    "pipe.steps": ("要执行的步骤", "Steps to run"),
    "step.split": ("分场景", "Split scenes"),
    "step.caption": ("标注视频", "Caption clips"),
    "step.preprocess": ("预处理", "Preprocess"),
    "step.train": ("训练", "Train"),
    "step.export": ("导出 ComfyUI", "ComfyUI export"),
    "pipe.template": ("配置模板", "Config template"),
    "template.13b": ("13B LoRA（ltx_13b_lora_template）", "13B LoRA (ltx_13b_lora_template)"),
    "template.13b-int8": ("13B int8-quanto LoRA（24GB 显卡）", "13B int8-quanto LoRA (24 GB cards)"),
    "template.2b": ("2B LoRA", "2B LoRA"),
    "template.tiny": ("微型演示模型（CPU 即可）", "Tiny demo models (CPU is fine)"),
    "pipe.memory": ("显存估算", "Memory estimate"),
    "memory.unavailable": ("显存估算暂不可用（ltxtrainer.memory 尚未安装）。",
                           "Memory estimate not available yet (ltxtrainer.memory is missing)."),
    "memory.failed": ("无法估算显存：{error}", "Could not estimate memory: {error}"),
    "memory.result": ("预计峰值显存约 {total:.1f} GB。{verdict}", "Expected peak memory about {total:.1f} GB. {verdict}"),
    "pipe.start": ("开始一键训练", "Start one-click training"),
    "pipe.stop": ("停止（保存检查点）", "Stop (saves a checkpoint)"),
    "pipe.log": ("实时日志", "Live log"),
    # job states and progress lines
    "status.queued": ("排队中", "queued"),
    "status.running": ("运行中", "running"),
    "status.stopping": ("正在停止（保存检查点）", "stopping (saving a checkpoint)"),
    "status.finished": ("已完成", "finished"),
    "status.failed": ("失败", "failed"),
    "status.stopped": ("已停止（可继续训练）", "stopped (can be resumed)"),
    "status.killed": ("已强制结束", "killed"),
    "status.cancelled": ("已取消", "cancelled"),
    "status.lost": ("已中断（进程已消失）", "interrupted (the process is gone)"),
    "status.incomplete": ("未完成", "incomplete"),
    "status.not_started": ("未开始", "not started"),
    "status.out_of_memory": ("显存不足", "out of memory"),
    "status.pending": ("等待", "pending"),
    "status.done": ("完成", "done"),
    "status.skipped": ("跳过", "skipped"),
    # messages
    "msg.queued": ("已加入队列：{title}", "Queued: {title}"),
    "msg.interrupted": ("已发送中断：训练会保存检查点后退出。再按一次“停止”强制结束。",
                        "Interrupt sent: training saves a checkpoint and exits. Press Stop again to kill it."),
    "msg.killed": ("已强制结束任务。", "The job was killed."),
    "msg.cancelled": ("已从队列中取消。", "Removed from the queue."),
    "msg.nothing": ("没有可停止的任务。", "There is no job to stop."),
    "msg.no_project": ("请先选择一个项目。", "Choose a project first."),
    "msg.no_steps": ("请至少选择一个步骤。", "Choose at least one step."),
    "msg.bad_resolution": ("分辨率无效：{error}", "Invalid resolution: {error}"),
    "msg.refused": ("已拒绝：{error}", "Refused: {error}"),
    "msg.invalid_config": ("参数无效（配置校验信息如下）：\n{error}", "Invalid parameters (the config check says):\n{error}"),
    "msg.saved_config": ("已保存：{path}", "Saved: {path}"),
    "msg.bad_name": ("文件名只能包含字母、数字、下划线、连字符和点：{name}",
                     "A file name may hold only letters, digits, _, - and .: {name}"),
    "msg.loaded_config": ("已载入：{path}", "Loaded: {path}"),
    # advanced tab
    "adv.intro": ("所有字段都来自训练配置的校验模式（与 configs/*.yaml 相同）；提示中给出取值范围。",
                  "Every field comes from the training config schema (the same as configs/*.yaml); hints give the limits."),
    "adv.source": ("从 configs/ 载入配置", "Load a config from configs/"),
    "adv.load": ("载入", "Load"),
    "adv.name": ("保存为（configs/ 中的文件名）", "Save as (file name in configs/)"),
    "adv.save": ("保存参数到配置文件", "Save parameters to config file"),
    "adv.start": ("开始高级训练", "Start advanced training"),
    "adv.limits": ("范围 {limits}。", "Range {limits}. "),
    "adv.section_on": ("写入此配置段", "write this section"),
    # dataset tab
    "ds.folder": ("片段文件夹：{path}", "Clips folder: {path}"),
    "ds.no_clips": ("这个项目还没有视频片段。", "This project has no clips yet."),
    "ds.clip": ("片段", "Clip"),
    "ds.preview": ("预览", "Preview"),
    "ds.caption": ("标注文本", "Caption"),
    "ds.save": ("保存标注", "Save caption"),
    "ds.saved": ("已保存到 .txt 和 {path}", "Saved to the .txt and {path}"),
    "ds.recaption": ("重新标注此片段", "Re-caption this clip"),
    "ds.empty_caption": ("标注不能为空。", "The caption cannot be empty."),
    # runs tab
    "runs.table": ("outputs/ 中的训练", "Runs under outputs/"),
    "runs.columns": ("运行|状态|步数|可继续", "Run|Status|Step|Resumable"),
    "runs.run": ("选择运行", "Choose a run"),
    "runs.resume": ("继续训练", "Resume training"),
    "runs.not_resumable": ("这个运行不能继续：需要已停止或未完成、且有检查点的运行。",
                           "This run cannot be resumed: it must be stopped or incomplete and have a checkpoint."),
    "runs.yes": ("是", "yes"),
    "runs.no": ("否", "no"),
    # export tab
    "exp.lora": ("outputs/ 中的 LoRA 文件", "A LoRA file under outputs/"),
    "exp.path": ("或输入 outputs/ 内的相对路径", "Or a path relative to outputs/"),
    "exp.convert": ("转换为ComfyUI格式", "Convert to ComfyUI format"),
    "exp.where": ("转换后的文件将写入：{path}", "The converted file is written to: {path}"),
    "exp.no_lora": ("请选择一个 LoRA 文件。", "Choose a LoRA file."),
    "exp.missing": ("找不到文件：{path}", "File not found: {path}"),
    # environment tab
    "env.check": ("检查环境", "Check the environment"),
    "env.report": ("环境报告", "Environment report"),
    "env.failed": ("环境检查无法运行：{error}", "The environment check could not run: {error}"),
    "env.model_ok": ("✅ {name}：完整（LTX-Video {variant}）", "✅ {name}: complete (LTX-Video {variant})"),
    "env.model_bad": ("❌ {name}：{problems}", "❌ {name}: {problems}"),
    "env.model_other": ("➖ {name}：不是 LTX-Video 模型（未检查）", "➖ {name}: not an LTX-Video folder (not checked)"),
    "env.problems": ("需要处理的问题", "Things to fix"),
    "env.all_good": ("训练所需的一切都已就绪。", "Everything needed for training is in place."),
    # ---- gui: runs, queue, outcomes, progress, log, plot, new project (the "gui" block) ----
    "banner.queued": ("排队中：{title}", "Queued: {title}"),
    "banner.running": ("运行中：{title}", "Running: {title}"),
    "banner.stopping": ("正在停止（保存检查点）：{title}", "Stopping (saving a checkpoint): {title}"),
    "banner.finished": ("✅ 已完成：{title}", "✅ Finished: {title}"),
    "banner.stopped": ("⏸ 已停止：{title}", "⏸ Stopped: {title}"),
    "banner.failed": ("❌ 失败：{title}", "❌ Failed: {title}"),
    "banner.refused": ("⛔ 已拒绝：{title}", "⛔ Refused: {title}"),
    "banner.cancelled": ("已取消：{title}", "Cancelled: {title}"),
    "banner.no_reason": ("没有给出原因，请查看下面的日志。", "No reason was given; see the log below."),
    "banner.stage": ("出错的阶段：{stage}", "Stage: {stage}"),
    "banner.checkpoint": ("检查点：{path}", "Checkpoint: {path}"),
    "banner.continue": ("继续训练：在“训练监控”页选择这个运行，点“继续训练”。",
                        "To continue: choose this run on the Runs tab and press “Resume training”."),
    "banner.lora": ("LoRA 文件：{path}", "LoRA file: {path}"),
    "banner.comfyui": ("ComfyUI 文件：{path}", "ComfyUI file: {path}"),
    "banner.output": ("输出文件：{path}", "Output file: {path}"),
    "banner.run_dir": ("运行文件夹：{path}", "Run folder: {path}"),
    "status.refused": ("已拒绝", "refused"),
    "title.pipeline": ("{project} {size}（{stages}）", "{project} {size} ({stages})"),
    "title.resume": ("继续训练 {run}", "resume {run}"),
    "title.train": ("训练 {run}", "train {run}"),
    "title.caption": ("重新标注 {project}/{clip}", "caption {project}/{clip}"),
    "title.export": ("导出 {lora}", "export {lora}"),
    "progress.overall": ("总进度 {percent}%，剩余约 {eta}", "Overall {percent}%, about {eta} left"),
    "progress.overall_no_eta": ("总进度 {percent}%", "Overall {percent}%"),
    "progress.complete": ("总进度 100%：全部完成", "Overall 100%: all done"),
    "progress.columns": ("阶段|状态|进度|数量|速度|剩余|说明", "Stage|State|Progress|Count|Rate|Left|Message"),
    "progress.steps_per_s": ("步/秒", "steps/s"),
    "progress.items_per_s": ("个/秒", "items/s"),
    "log.empty": ("（还没有日志）", "(no log yet)"),
    "pipe.run_name": ("运行名称（可选）", "Run name (optional)"),
    "pipe.run_name_info": ("留空则每次开始都新建一个带时间的运行文件夹；继续已有的运行请用“训练监控”页",
                           "Empty: every Start makes a new, dated run folder. To continue a run use the Runs tab"),
    "pipe.frames_any": ("每段帧数（8 的倍数 + 1）；✓ 表示所有片段都够长", "Frames per clip (8k+1); ✓: every clip is long enough"),
    "frames.fits": ("{count} ✓", "{count} ✓"),
    "frames.partial": ("{count}（{fit}/{total} 个片段够长）", "{count} ({fit}/{total} clips long enough)"),
    "pipe.train_steps": ("训练步数（0：使用模板的步数）", "Training steps (0: the template's)"),
    "pipe.on_short": ("较短的片段", "Short clips"),
    "on_short.shrink": ("缩短帧数使用（推荐）", "shrink to fit (recommended)"),
    "on_short.skip": ("跳过", "skip"),
    "msg.duplicate": ("同样的任务已经在队列或运行中：{title}", "The same job is already queued or running: {title}"),
    "queue.title": ("任务队列", "Job queue"),
    "queue.empty": ("队列为空。", "The queue is empty."),
    "queue.pick": ("排队的任务", "Queued job"),
    "queue.cancel": ("取消所选任务", "Cancel the chosen job"),
    "queue.cancelled": ("已取消：{title}", "Cancelled: {title}"),
    "queue.not_queued": ("这个任务已经不在队列中了。", "That job is no longer queued."),
    "queue.row": ("{position}. {title}", "{position}. {title}"),
    "queue.recent": ("**最近结束的任务**", "**Recently ended**"),
    "queue.ended": ("{title}：{state}", "{title}: {state}"),
    "queue.running": ("正在运行：{title}", "Running now: {title}"),
    "project.new": ("新建项目（上传视频和图片）", "New project (upload videos and images)"),
    "project.name": ("项目名称（触发词）", "Project name (trigger word)"),
    "project.name_info": ("只能用英文字母、数字、_ 和 -，例如 mycat 或 sks_style",
                          "ASCII letters, digits, _ and - only, e.g. mycat or sks_style"),
    "project.files": ("视频和图片", "Videos and images"),
    "project.create": ("创建项目", "Create the project"),
    "project.created": ("已创建项目 {name}：{count} 个文件复制到 {path}",
                        "Created project {name}: {count} files copied to {path}"),
    "plot.loss": ("损失", "loss"),
    "plot.label": ("损失曲线（蓝：每步的损失，橙：平滑后）", "Loss curve (blue: each step's loss, orange: smoothed)"),
    "plot.step": ("步数", "step"),
    "gallery.caption": ("第 {step} 步：{prompt}", "Step {step}: {prompt}"),
    "gallery.empty": ("还没有验证视频。", "No validation videos yet."),
    "runs.resume_queued": ("已加入队列：继续 {run}（完成后会导出 ComfyUI 文件）",
                           "Queued: resume {run} (the ComfyUI file is exported when it ends)"),
}

FIELD_NAMES: dict[str, str] = {
    "model.model_source": "模型文件夹",
    "model.training_mode": "训练模式",
    "model.load_checkpoint": "从检查点开始",
    "lora.enabled": "LoRA 配置段",
    "lora.rank": "LoRA 秩",
    "lora.alpha": "LoRA alpha",
    "lora.dropout": "LoRA 丢弃率",
    "lora.target_modules": "LoRA 目标模块（每行一个）",
    "optimization.learning_rate": "学习率",
    "optimization.steps": "训练步数",
    "optimization.batch_size": "批量大小",
    "optimization.gradient_accumulation_steps": "梯度累积步数",
    "optimization.max_grad_norm": "梯度裁剪",
    "optimization.optimizer_type": "优化器",
    "optimization.scheduler_type": "学习率调度",
    "optimization.enable_gradient_checkpointing": "梯度检查点（省显存）",
    "acceleration.mixed_precision_mode": "混合精度",
    "acceleration.quantization": "量化方法",
    "acceleration.block_offload": "分块卸载到内存",
    "acceleration.attention_backend": "注意力后端（留空：PyTorch 自选）",
    "data.preprocessed_data_root": "预处理数据文件夹",
    "validation.prompts": "验证提示词（每行一个）",
    "validation.video_dims": "验证视频尺寸（宽, 高, 帧）",
    "validation.interval": "验证间隔步数",
    "validation.inference_steps": "验证推理步数",
    "checkpoints.interval": "检查点间隔步数",
    "checkpoints.keep_last_n": "保留的检查点数",
    "seed": "随机种子",
    "output_dir": "输出文件夹",
}


def default_language() -> str:
    """Chinese when the system locale (or LANG) says so, else English."""
    candidates = [os.environ.get("LANG", ""), os.environ.get("LC_ALL", "")]
    try:
        candidates.insert(0, locale.getlocale()[0] or "")
    except ValueError:
        pass
    return "zh" if any(c.lower().startswith(("zh", "chinese")) for c in candidates) else "en"


def t(key: str, lang: str, **values) -> str:
    """The string for `key` in `lang` (English when the language is unknown), formatted."""
    zh, en = STRINGS[key]
    text = zh if lang == "zh" else en
    return text.format(**values) if values else text


def field_label(path: str, lang: str) -> str:
    """A config field's label: its Chinese name with the schema path, or the path alone."""
    name = FIELD_NAMES.get(path)
    return f"{name} ({path})" if lang == "zh" and name else path
