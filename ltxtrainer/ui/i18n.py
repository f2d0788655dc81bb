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
    "pipe.frames_info": ("24 的倍数 + 1", "a multiple of 24, plus 1"),
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
    "pipe.start": ("开始一键训练", "Start one-click training"),
    "pipe.stop": ("停止（保存检查点）", "Stop (saves a checkpoint)"),
    "pipe.stages": ("各阶段进度", "Stage progress"),
    "pipe.progress": ("进度", "Progress"),
    "pipe.log": ("实时日志", "Live log"),
    "pipe.loss": ("损失曲线", "Loss curve"),
    "pipe.videos": ("验证视频", "Validation videos"),
    "pipe.message": ("消息", "Message"),
    # job states and progress lines
    "job.none": ("当前没有任务。", "No job yet."),
    "job.line": ("任务：{title} — {status}", "Job: {title} — {status}"),
    "job.queue": ("（队列中还有 {count} 个任务）", "({count} more queued)"),
    "job.stage": ("阶段 {stage}：{done} / {total}", "Stage {stage}: {done} / {total}"),
    "job.step": ("训练步 {step} / {total}，损失 {loss:.4f}，剩余约 {eta}",
                 "Step {step} / {total}, loss {loss:.4f}, about {eta} left"),
    "job.error": ("错误：{message}", "Error: {message}"),
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
    "stages.header": ("| 阶段 | 状态 | 说明 |\n|---|---|---|", "| Stage | State | Message |\n|---|---|---|"),
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
    "runs.step": ("验证视频（按步数）", "Validation videos (by step)"),
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
    # ---- "forms" block: the GPU/model header, the memory line, the Advanced and Environment tabs ----
    "header.gpu": ("GPU：{name}，显存 {total:.1f} GB", "GPU: {name}, {total:.1f} GB"),
    "header.no_gpu": ("未检测到 NVIDIA GPU：训练将在 CPU 上运行（只适合微型演示）",
                      "No NVIDIA GPU: training runs on the CPU (fine for the tiny demo only)"),
    "header.no_models": ("models/ 中没有模型文件夹", "No model folders in models/"),
    "header.model_bad": ("❌ {name}：不完整（{count} 个问题，见“环境与模型”页）",
                         "❌ {name}: incomplete ({count} problems, see Environment and models)"),
    "memory.fits": ("✅ 预计峰值显存约 {need}，{card}（{total}）可以容纳。",
                    "✅ Expected peak memory about {need}: fits the {card} ({total})."),
    "memory.tight": ("⚠️ 预计峰值显存约 {need}，接近 {card}（{total}）的上限：桌面或其他程序占用显存时可能不够。",
                     "⚠️ Expected peak memory about {need}: tight on the {card} ({total}); it may run out while "
                     "the desktop or other programs use the card."),
    "memory.too_big": ("❌ 预计峰值显存约 {need}，超出 {card}（{total}）：这样无法训练。",
                       "❌ Expected peak memory about {need}: will not fit the {card} ({total})."),
    "memory.advice": ("改为：{changes}，约需 {need}，可以容纳。", "To fit: {changes} (about {need})."),
    "memory.no_advice": ("即使开启梯度检查点、int8 量化和分块卸载、减少帧数也放不下：请选择更小的模型模板。",
                         "Even gradient checkpointing, int8 quantization, block offload and fewer frames do not "
                         "make it fit: choose a smaller model's template."),
    "memory.at_size": ("按 {size}：", "At {size}: "),
    "memory.form_invalid": ("有参数无效，暂时无法估算显存（保存时会说明原因）。",
                            "No memory estimate while a value is invalid (saving says which)."),
    "memory.change.separator": ("、", ", "),
    "memory.change.gradient_checkpointing": ("开启梯度检查点", "turn on gradient checkpointing"),
    "memory.change.quantization": ("使用 {value} 量化", "use {value} quantization"),
    "memory.change.batch_size": ("批量大小改为 {value}", "batch size {value}"),
    "memory.change.block_offload": ("开启分块卸载到内存", "turn on block offload"),
    "memory.change.frames": ("帧数减到 {value}", "{value} frames"),
    "memory.cpu": ("未检测到 NVIDIA GPU：将在 CPU 上训练微型模型，预计占用内存约 {need}。",
                   "No NVIDIA GPU: the tiny model trains on the CPU, using about {need} of memory."),
    "memory.no_gpu": ("❌ 未检测到 NVIDIA GPU：这个模型需要约 {need} 显存，CPU 上无法实际训练。请改用微型演示模型。",
                      "❌ No NVIDIA GPU: this model needs about {need} of GPU memory and cannot really train on the "
                      "CPU. Use the tiny demo model."),
    "memory.bad_size": ("无法估算显存：分辨率“{resolution}”或帧数 {frames} 无效（宽x高须为 32 的倍数，帧数为 8k+1）。",
                        "No memory estimate: resolution '{resolution}' or {frames} frames is invalid (WxH multiples "
                        "of 32, frames 8k+1)."),
    "memory.unknown_model": ("无法估算显存：不认识模型“{model}”（models/ 中没有它的 transformer/config.json）。",
                             "No memory estimate: unknown model '{model}' (no transformer/config.json for it in "
                             "models/)."),
    "adv.intro": ("所有字段都来自训练配置（与 configs/*.yaml 相同）；每个字段下方的小字是它在 YAML 中的键。",
                  "Every field comes from the training config (the same as configs/*.yaml); the small print under "
                  "each field is its YAML key."),
    "adv.source": ("从 configs/ 载入配置", "Load a config from configs/"),
    "adv.load": ("载入", "Load"),
    "adv.name": ("保存为（configs/ 中的文件名）", "Save as (file name in configs/)"),
    "adv.save": ("保存参数到配置文件", "Save parameters to config file"),
    "adv.start": ("开始高级训练", "Start advanced training"),
    "adv.range": ("范围 {low} – {high}", "range {low} – {high}"),
    "adv.at_least": ("不小于 {low}", "at least {low}"),
    "adv.at_most": ("不大于 {high}", "at most {high}"),
    "adv.key": ("YAML：{path}", "YAML: {path}"),
    "adv.bad_model": ("模型文件夹不可用（{path}）：{problems}", "The model folder cannot be used ({path}): {problems}"),
    "adv.bad_data": ("预处理数据不可用：{path} 中没有 latents/ 和 conditions/ 文件夹。请先在一键训练中运行预处理，"
                     "或选择列表中的数据。",
                     "The precomputed data cannot be used: {path} holds no latents/ and conditions/ folders. Run the "
                     "preprocess step first, or choose data from the list."),
    "adv.not_queued": ("未加入队列。", "Not queued."),
    "env.check": ("重新检查环境", "Check the environment again"),
    "env.running": ("正在检查环境（torch、驱动、磁盘、模型）…", "Checking the environment (torch, driver, disk, models)…"),
    "env.failed": ("环境检查无法运行：{error}", "The environment check could not run: {error}"),
    "env.model_ok": ("✅ {name}：完整（LTX-Video {variant}）", "✅ {name}: complete (LTX-Video {variant})"),
    "env.model_bad": ("❌ {name}：{problems}", "❌ {name}: {problems}"),
    "env.model_other": ("➖ {name}：不是 LTX-Video 模型（未检查）", "➖ {name}: not an LTX-Video folder (not checked)"),
    "env.problems": ("需要处理的问题", "Things to fix"),
    "env.all_good": ("训练所需的一切都已就绪。", "Everything needed for training is in place."),
    "env.variant.tiny": ("微型测试模型", "tiny test model"),
    "env.variant.custom": ("自定义结构", "custom shape"),
    "env.yes": ("是", "yes"),
    "env.no": ("否", "no"),
    "env.torch": ("torch {version}（CUDA {cuda}，能使用 GPU：{usable}）", "torch {version} (CUDA {cuda}, GPU usable: {usable})"),
    "env.driver": ("NVIDIA 驱动 {version}（支持 CUDA ≤ {cuda}）", "NVIDIA driver {version} (CUDA ≤ {cuda})"),
    "env.disk": ("磁盘：{path} 可用 {free} / {total} GB", "Disk: {free} / {total} GB free at {path}"),
    "env.ffmpeg": ("ffmpeg：{path}", "ffmpeg: {path}"),
    "env.severity.error": ("错误", "error"),
    "env.severity.warning": ("警告", "warning"),
    "env.severity.info": ("提示", "info"),
    "env.smi_found": ("nvidia-smi 没有列出 GPU", "nvidia-smi lists no GPU"),
    "env.smi_missing": ("找不到 nvidia-smi", "nvidia-smi not found"),
    "envp.python_new": ("Python {python} 比测试过的 3.10–3.12 新：部分软件包可能没有对应的安装包。",
                        "Python {python} is newer than the tested 3.10-3.12: some packages may lack wheels for it."),
    "envp.python_new.fix": ("如果安装失败，请使用 Python 3.12 或 Anaconda。", "If an install fails, use Python 3.12 or Anaconda."),
    "envp.torch_missing": ("这个 Python 中没有安装 torch。", "torch is not installed in this Python."),
    "envp.torch_missing.fix": ("运行 {launcher}：它会先安装 torch。", "Run {launcher}: it installs torch first."),
    "envp.torch_cpu_build": ("torch {version} 是只支持 CPU 的版本，但 nvidia-smi 看到了 NVIDIA GPU：训练会忽略 GPU。",
                             "torch {version} is a CPU-only build, but nvidia-smi sees an NVIDIA GPU: training would "
                             "ignore the GPU."),
    "envp.torch_cpu_build.fix": ("换成 CUDA 版本：先运行 `{venv_python} -m pip uninstall -y torch`，再运行 "
                                 "`{venv_python} -m pip install torch --index-url {index_url}`，然后重新启动 {launcher}。",
                                 "Replace it with the CUDA build: `{venv_python} -m pip uninstall -y torch` then "
                                 "`{venv_python} -m pip install torch --index-url {index_url}`, then start {launcher} again."),
    "envp.driver_old": ("NVIDIA 驱动 {driver} 最高支持 CUDA {driver_cuda}，但 torch 是为 CUDA {torch_cuda} 编译的：驱动太旧。",
                        "The NVIDIA driver {driver} supports CUDA up to {driver_cuda}, but torch was built for CUDA "
                        "{torch_cuda}: the driver is too old."),
    "envp.driver_old.fix": ("更新 NVIDIA 驱动（https://www.nvidia.com/Download/index.aspx），然后重启。",
                            "Update the NVIDIA driver (https://www.nvidia.com/Download/index.aspx), then restart."),
    "envp.cuda_unusable": ("torch 是 CUDA {torch_cuda} 版本，nvidia-smi 也看到了 GPU，但 torch 无法使用它。",
                           "torch is a CUDA {torch_cuda} build and nvidia-smi sees a GPU, yet torch cannot use it."),
    "envp.cuda_unusable.fix": ("更新 NVIDIA 驱动并重启；如果仍不行，从 {index_url} 重新安装 torch。",
                               "Update the NVIDIA driver and restart; if that does not help, reinstall torch from "
                               "{index_url}."),
    "envp.no_gpu": ("未找到 NVIDIA GPU（{where}）：训练将在 CPU 上运行，微型演示可以，真实模型太慢。",
                    "No NVIDIA GPU found ({where}): training will run on CPU: fine for the tiny demo, far too slow for "
                    "real models."),
    "envp.no_gpu.fix": ("如果这台电脑有 NVIDIA 显卡，请安装 NVIDIA 驱动。",
                        "Install an NVIDIA GPU driver if this machine has an NVIDIA card."),
    "envp.no_bf16": ("GPU {index}（{name}）不支持原生 bf16：bf16 训练会很慢或失败。",
                     "GPU {index} ({name}) has no native bf16: bf16 training is slow or fails on it."),
    "envp.no_bf16.fix": ("请使用 RTX 30/40/50 系列、A 系列或更新的显卡训练。",
                         "Use an RTX 30xx/40xx/50xx, A-series or newer card for training."),
    "envp.low_disk": ("{path} 只剩 {free_gb} GB：训练会在这里写入潜变量和检查点，可能中途停止。",
                      "Only {free_gb} GB free at {path}: runs write latents and checkpoints there and may stop half-way."),
    "envp.low_disk.fix": ("至少腾出 {need_gb:.0f} GB，或把项目移到更大的磁盘。",
                          "Free at least {need_gb:.0f} GB, or move the project to a larger drive."),
    "envp.no_ffmpeg": ("没有找到 ffmpeg。ltxtrainer 自己的步骤用 PyAV 读写视频，不需要它；调用 ffmpeg 的工具需要。",
                       "No ffmpeg found. ltxtrainer's own stages read and write video with PyAV and do not need it; "
                       "tools that call ffmpeg do."),
    "envp.no_ffmpeg.fix": ("运行 `{venv_python} -m pip install imageio-ffmpeg`（已在 requirements.txt 中）",
                           "`{venv_python} -m pip install imageio-ffmpeg` (it is in requirements.txt)"),
    "envp.model_incomplete": ("模型文件夹 {name} 不完整：{problems}", "Model folder {name} is incomplete: {problems}"),
    "envp.model_incomplete.fix": ("把缺少的文件重新下载到 {path}（diffusers 格式）。",
                                  "Download the missing files again into {path} (diffusers layout)."),
    "envp.no_model": ("{models_dir} 中没有完整的 LTX-Video 模型：真实训练需要它，微型演示不需要。",
                      "No complete LTX-Video model in {models_dir}: real training needs one; the tiny demo does not."),
    "envp.no_model.fix": ("把 LTX-Video-0.9.7-diffusers 下载到 {target}（见 INSTALLATION_CN.md）。",
                          "Download LTX-Video-0.9.7-diffusers into {target} (see INSTALLATION_CN.md)."),
    "envm.folder_not_found": ("找不到文件夹 {path}", "folder not found: {path}"),
    "envm.missing_subfolder": ("缺少子文件夹 {what}（{path}）", "missing subfolder {what} ({path})"),
    "envm.missing_weights": ("{path} 中缺少权重文件（*.safetensors）", "no weights (*.safetensors) in {path}"),
    "envm.missing_tokenizer": ("{path} 中缺少 tokenizer.json 或 spiece.model", "no tokenizer.json or spiece.model in {path}"),
    "envm.only_bin": ("{path} 中只有 .bin 权重，ltxtrainer 只读取 .safetensors",
                      "only .bin weights in {path}; ltxtrainer reads .safetensors only"),
    "envm.missing_file": ("缺少 {what}：{path}", "missing {what}: {path}"),
    "envm.empty_file": ("文件为空（下载未完成？）：{path}", "empty file (download incomplete?): {path}"),
    "envm.bad_json": ("JSON 文件已损坏，无法读取：{path}", "unreadable JSON: {path}"),
    "envm.other": ("问题：{problem}", "problem: {problem}"),
}

# Every field of the Advanced tab: (中文 label, English label, 中文 hint, English hint). The YAML key
# is shown under each field in small print; limits come from the schema and are added to the hint.
FIELDS: dict[str, tuple[str, str, str, str]] = {
    "model.model_source": ("模型文件夹", "Model folder", "diffusers 格式的本地文件夹（models/ 中）或本地缓存的仓库名",
                           "A local diffusers folder (in models/) or a repo id already in the local cache"),
    "model.training_mode": ("训练模式", "Training mode", "lora：只训练适配器；full：训练全部权重",
                            "lora: train an adapter; full: train every weight"),
    "model.load_checkpoint": ("从检查点开始", "Start from checkpoint",
                              "检查点文件夹或 LoRA 文件，或 latest（本次运行最新的检查点）；留空从头开始",
                              "A checkpoint folder or LoRA file, or 'latest' (this run's latest); empty starts fresh"),
    "lora.enabled": ("写入 LoRA 配置段", "LoRA section", "LoRA 模式必须开启", "Needed in LoRA mode"),
    "lora.rank": ("LoRA 秩", "LoRA rank", "适配器大小；显存和文件大小随之增长", "Adapter size; memory and file size grow with it"),
    "lora.alpha": ("LoRA alpha", "LoRA alpha", "适配器按 alpha/秩 缩放；一般与秩相同",
                   "The adapter is scaled by alpha/rank; usually equal to the rank"),
    "lora.dropout": ("LoRA 丢弃率", "LoRA dropout", "适配器输入的丢弃概率", "Dropout on the adapter's input"),
    "lora.target_modules": ("LoRA 目标模块", "LoRA target modules", "每行一个模块名（transformer_blocks 内）",
                            "One module name per line (inside transformer_blocks)"),
    "optimization.learning_rate": ("学习率", "Learning rate", "LoRA 常用 1e-4 到 5e-4", "1e-4 to 5e-4 is usual for a LoRA"),
    "optimization.steps": ("训练步数", "Training steps", "优化器更新的次数", "Optimizer steps to train"),
    "optimization.batch_size": ("批量大小", "Batch size", "每步的样本数；显存随之增长", "Samples per step; memory grows with it"),
    "optimization.gradient_accumulation_steps": ("梯度累积步数", "Gradient accumulation", "累积几个批量再更新一次",
                                                 "Batches accumulated per update"),
    "optimization.max_grad_norm": ("梯度裁剪", "Gradient clipping", "梯度范数上限；0 表示不裁剪",
                                   "Largest gradient norm; 0 turns clipping off"),
    "optimization.optimizer_type": ("优化器", "Optimizer", "adamw8bit 的优化器状态更省显存",
                                    "adamw8bit keeps smaller optimizer state"),
    "optimization.scheduler_type": ("学习率调度", "LR schedule", "学习率随步数的变化方式", "How the learning rate changes over the steps"),
    "optimization.scheduler_params": ("调度参数", "Schedule parameters", "YAML 键值，例如 end_factor: 0.1",
                                      "YAML key: value pairs, e.g. end_factor: 0.1"),
    "optimization.enable_gradient_checkpointing": ("梯度检查点", "Gradient checkpointing",
                                                   "重算激活：显存少得多，时间约 1.5 倍",
                                                   "Recompute activations: far less memory, about 1.5x time"),
    "optimization.first_frame_conditioning_p": ("首帧条件概率", "First-frame conditioning",
                                                "保持首帧干净的概率（图生视频）", "Chance of keeping the first frame clean (image-to-video)"),
    "optimization.weight_decay": ("权重衰减", "Weight decay", "AdamW 的权重衰减", "AdamW weight decay"),
    "acceleration.mixed_precision_mode": ("混合精度", "Mixed precision", "bf16 省一半显存；CPU 上使用 no",
                                          "bf16 halves memory; use no on a CPU"),
    "acceleration.quantization": ("量化", "Quantization", "冻结的基础模型权重量化（仅 LoRA 模式）；int8 适合 24GB 显卡",
                                  "Quantize the frozen base (LoRA mode only); int8 suits 24 GB cards"),
    "acceleration.load_text_encoder_in_8bit": ("文本编码器 8 位", "Text encoder in 8-bit", "验证时以 8 位加载 T5，省显存",
                                               "Load T5 in 8-bit for validation, saving memory"),
    "acceleration.compile_with_inductor": ("编译加速", "Compile", "用 torch.compile 编译每个 transformer 块",
                                           "torch.compile each transformer block"),
    "acceleration.compilation_mode": ("编译模式", "Compile mode", "torch.compile 的模式", "torch.compile's mode"),
    "acceleration.block_offload": ("分块卸载到内存", "Block offload", "模型块放在内存中、逐块送入显卡：显存少，速度慢",
                                   "Keep blocks in host memory and stream them to the GPU: less memory, slower"),
    "acceleration.attention_backend": ("注意力后端", "Attention backend", "diffusers 的注意力后端；留空由 PyTorch 自选",
                                       "A diffusers attention backend; empty lets PyTorch choose"),
    "data.preprocessed_data_root": ("预处理数据", "Precomputed data", "选择项目的预处理数据（latents 和 conditions 文件夹）",
                                    "Choose a project's precomputed data (latents and conditions folders)"),
    "data.num_dataloader_workers": ("数据加载进程数", "Data loader workers", "0 表示在主进程中加载", "0 loads in the main process"),
    "validation.prompts": ("验证提示词", "Validation prompts", "每行一个；留空不生成验证视频",
                           "One per line; empty makes no validation videos"),
    "validation.negative_prompt": ("反向提示词", "Negative prompt", "验证视频中要避免的内容", "What validation videos should avoid"),
    "validation.images": ("验证首帧图片", "Validation images", "图生视频的首帧图片，每个提示词一张",
                          "First-frame images for image-to-video, one per prompt"),
    "validation.reference_videos": ("参考视频", "Reference videos", "IC-LoRA 的参考视频，每个提示词一个",
                                    "IC-LoRA reference videos, one per prompt"),
    "validation.video_dims": ("验证视频尺寸", "Validation size", "宽, 高, 帧数，例如 768, 512, 49",
                              "Width, height, frames, e.g. 768, 512, 49"),
    "validation.seed": ("验证随机种子", "Validation seed", "固定种子让各次验证可比", "A fixed seed keeps validations comparable"),
    "validation.inference_steps": ("验证推理步数", "Validation steps", "生成每个验证视频的去噪步数",
                                   "Denoising steps per validation video"),
    "validation.interval": ("验证间隔", "Validation interval", "每隔多少步生成验证视频；留空关闭",
                            "Steps between validation videos; empty turns them off"),
    "validation.videos_per_prompt": ("每个提示词的视频数", "Videos per prompt", "每个提示词生成几个验证视频",
                                     "Validation videos per prompt"),
    "validation.guidance_scale": ("引导强度", "Guidance scale", "无分类器引导的强度", "Classifier-free guidance strength"),
    "validation.skip_initial_validation": ("跳过第 0 步验证", "Skip step-0 validation", "训练前不生成验证视频",
                                           "No validation videos before training"),
    "validation.frame_rate": ("验证帧率", "Validation frame rate", "交给生成管线的帧率（fps）", "Frames per second given to the pipeline"),
    "checkpoints.interval": ("检查点间隔", "Checkpoint interval", "每隔多少步保存检查点；留空只在结束时保存",
                             "Steps between checkpoints; empty saves only at the end"),
    "checkpoints.keep_last_n": ("保留检查点数", "Checkpoints kept", "-1 全部保留", "-1 keeps all"),
    "hub.push_to_hub": ("上传到 Hugging Face", "Push to the Hub", "训练结束后上传 LoRA", "Upload the LoRA after training"),
    "hub.hub_token": ("Hugging Face 令牌", "Hub token", "上传用的访问令牌", "Access token for the upload"),
    "hub.hub_model_id": ("Hugging Face 仓库", "Hub repository", "上传到的仓库名（用户/名称）", "Repository to upload to (user/name)"),
    "flow_matching.timestep_sampling_mode": ("时间步采样", "Timestep sampling", "shifted_logit_normal 与参考训练器相同",
                                             "shifted_logit_normal matches the reference trainer"),
    "flow_matching.timestep_sampling_params": ("采样参数", "Sampling parameters", "YAML 键值，例如 std: 1.0",
                                               "YAML key: value pairs, e.g. std: 1.0"),
    "conditioning.enabled": ("写入条件配置段", "Conditioning section", "较新版本配置的 conditioning 段",
                             "The later schema's conditioning section"),
    "conditioning.mode": ("条件模式", "Conditioning mode", "none：普通 LoRA", "none: a plain LoRA"),
    "conditioning.first_frame_conditioning_p": ("首帧条件概率", "First-frame conditioning",
                                                "保持首帧干净的概率（覆盖优化段中的同名设置）",
                                                "Chance of keeping the first frame clean (wins over the optimization one)"),
    "conditioning.reference_latents_dir": ("参考潜变量文件夹", "Reference latents folder", "IC-LoRA 参考视频的潜变量",
                                           "Latents of the IC-LoRA reference videos"),
    "wandb.enabled": ("记录到 wandb", "Log to wandb", "把损失和验证视频记录到 Weights & Biases",
                      "Log loss and validation videos to Weights & Biases"),
    "wandb.project": ("wandb 项目", "wandb project", "", ""),
    "wandb.entity": ("wandb 团队", "wandb entity", "", ""),
    "wandb.tags": ("wandb 标签", "wandb tags", "每行一个", "One per line"),
    "wandb.log_validation_videos": ("上传验证视频", "Log validation videos", "", ""),
    "seed": ("随机种子", "Seed", "固定种子让训练可复现", "A fixed seed makes training repeatable"),
    "output_dir": ("输出文件夹", "Output folder", "检查点、验证视频和 LoRA 写在这里",
                   "Checkpoints, validation videos and the LoRA go here"),
}
SECTIONS: dict[str, tuple[str, str]] = {
    "model": ("模型", "Model"), "lora": ("LoRA", "LoRA"), "optimization": ("优化", "Optimization"),
    "acceleration": ("加速与显存", "Speed and memory"), "data": ("数据", "Data"), "validation": ("验证视频", "Validation"),
    "checkpoints": ("检查点", "Checkpoints"), "hub": ("Hugging Face 上传", "Hugging Face upload"),
    "flow_matching": ("流匹配", "Flow matching"), "conditioning": ("条件", "Conditioning"),
    "wandb": ("wandb 记录", "wandb logging"), "general": ("常规", "General"),
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
    """A config field's short label in `lang` (the YAML key goes under it, in the hint)."""
    zh, en, _, _ = FIELDS[path]
    return zh if lang == "zh" else en


def field_hint(path: str, lang: str) -> str:
    """A config field's one-line explanation in `lang`."""
    _, _, zh, en = FIELDS[path]
    return zh if lang == "zh" else en


def section_label(section: str, lang: str) -> str:
    zh, en = SECTIONS[section]
    return zh if lang == "zh" else en
