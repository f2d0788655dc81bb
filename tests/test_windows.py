"""What a Windows user runs into, tested on any machine: detached jobs stopped through a stop file,
files another process holds open, a system proxy in front of the GUI, options that need a compiler,
and modules Windows lacks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ltxtrainer import atomic, desktop, platform_checks
from ltxtrainer.config import ConfigError, TrainerConfig, config_from_dict
from ltxtrainer.stopfile import STOP_FILE_ENV
from ltxtrainer.training import checkpoints
from ltxtrainer.training.trainer import run_training
from ltxtrainer.ui.jobs import STOP_FILE, JobRunner
from tests.precomputed import write_sample
from tests.test_training import make_config, train

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "scripts" / "train.py")


# ---- stopping a job that no console signal reaches --------------------------------------------

def test_a_training_stopped_by_its_stop_file_alone_saves_a_checkpoint_and_exits_130(tiny_model_dir, tmp_path):
    """Windows: the GUI starts train.py detached from any console, so the stop file is its only Stop."""
    data = tmp_path / "数据 集"
    for index in range(2):
        write_sample(data, f"clip{index}", frames=2, height=2, width=2, seed=index)
    output = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(make_config(tiny_model_dir, data, output, **{"optimization.steps": 100000}),
                                     allow_unicode=True), encoding="utf-8")
    stop = tmp_path / "任务" / STOP_FILE
    env = {**os.environ, STOP_FILE_ENV: str(stop), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, TRAIN, str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, encoding="utf-8", cwd=tmp_path, env=env)
    try:
        for line in process.stdout:  # wait until training really runs
            if json.loads(line).get("event") == "step":
                break
        stop.parent.mkdir()
        stop.write_text("stop\n", encoding="utf-8")  # what the job runner's Stop writes; no signal is sent
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "stop file" in stderr and "--resume" in stderr and "Traceback" not in stderr
    saved = checkpoints.list_checkpoints(output)
    assert saved and saved[-1][0] >= 1


def test_the_gui_stop_of_a_real_training_saves_once_and_does_not_kill(tiny_model_dir, tmp_path):
    """On POSIX the GUI's Stop both writes the stop file and sends SIGINT: together they are one Ctrl+C, not two."""
    data = tmp_path / "data"
    write_sample(data, "clip", frames=2, height=2, width=2, seed=0)
    output = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(make_config(tiny_model_dir, data, output, **{"optimization.steps": 100000}),
                                     allow_unicode=True), encoding="utf-8")
    runner = JobRunner(tmp_path / "jobs")
    try:
        job = runner.submit("train", "训练", [sys.executable, TRAIN, str(config)], cwd=tmp_path)
        deadline = time.monotonic() + 120
        while not any(e["event"] == "step" for e in runner.events(job.id)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert runner.stop(job.id) == "interrupted"
        stopped = runner.wait(job.id, timeout=120)
        assert stopped.status == "stopped" and stopped.exit_code == 130, runner.read_log(job.id)
        assert checkpoints.list_checkpoints(output)
    finally:
        for job in runner.jobs():
            if job.active:
                runner.stop(job.id)
                runner.stop(job.id)
        runner.close()


# Follows only the stop file: ignores SIGINT, as a process on another console never receives it.
FILE_ONLY_TRAINER = textwrap.dedent(
    """
    import json, signal, sys, time
    from ltxtrainer import stopfile
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for step in range(1, 100000):
        print(json.dumps({"event": "step", "step": step}), flush=True)
        if stopfile.stop_requested():
            sys.exit(130)
        time.sleep(0.05)
    """
)


def test_the_gui_stop_reaches_a_job_through_its_stop_file(tmp_path):
    runner = JobRunner(tmp_path / "jobs 任务")
    try:
        job = runner.submit("train", "detached trainer", [sys.executable, "-c", FILE_ONLY_TRAINER], cwd=REPO)
        deadline = time.monotonic() + 60
        while not runner.events(job.id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runner.stop(job.id) == "interrupted"
        stopped = runner.wait(job.id, timeout=60)
        assert stopped.status == "stopped" and stopped.exit_code == 130, runner.read_log(job.id)
    finally:
        for job in runner.jobs():
            if job.active:
                runner.stop(job.id)
                runner.stop(job.id)
        runner.close()


# ---- files another process holds open ----------------------------------------------------------

def flaky_replace(monkeypatch, failures: int, when=lambda source, target: True) -> list[tuple[str, str]]:
    """os.replace that raises PermissionError `failures` times for matching renames, as Windows does
    while another process has the file open; returns the calls seen."""
    real_replace = os.replace
    calls: list[tuple[str, str]] = []

    def replace(source, target, *args, **kwargs):
        calls.append((str(source), str(target)))
        if when(str(source), str(target)) and sum(when(*call) for call in calls) <= failures:
            raise PermissionError(13, "The process cannot access the file because it is being used by another process")
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(atomic, "RENAME_RETRY_DELAYS_S", (0.01,) * 5)
    return calls


def test_a_status_file_the_gui_is_reading_is_still_replaced(monkeypatch, tmp_path):
    status = tmp_path / "状态" / "pipeline_status.json"
    atomic.write_text_atomic(status, '{"stage": "scenes"}')
    calls = flaky_replace(monkeypatch, failures=3)
    atomic.write_text_atomic(status, '{"stage": "captions"}')
    assert len(calls) == 4
    assert status.read_text(encoding="utf-8") == '{"stage": "captions"}'
    assert [path.name for path in status.parent.iterdir()] == [status.name]  # no temporary file left


def test_a_file_held_open_for_good_fails_with_the_old_version_intact(monkeypatch, tmp_path):
    status = tmp_path / "pipeline_status.json"
    atomic.write_text_atomic(status, "old")
    flaky_replace(monkeypatch, failures=100)
    with pytest.raises(PermissionError):
        atomic.write_text_atomic(status, "new")
    assert status.read_text(encoding="utf-8") == "old"
    assert [path.name for path in tmp_path.iterdir()] == [status.name]


def test_a_checkpoint_folder_in_use_is_still_published(monkeypatch, tmp_path):
    staging = tmp_path / ".step_000002.partial"
    staging.mkdir()
    (staging / "state.json").write_text("{}", encoding="utf-8")
    flaky_replace(monkeypatch, failures=2)
    atomic.commit_directory(staging, tmp_path / "step_000002")
    assert (tmp_path / "step_000002" / "state.json").is_file() and not staging.exists()


def test_a_checkpoint_that_cannot_be_pruned_is_kept_and_training_finishes(tiny_model_dir, monkeypatch, tmp_path,
                                                                         capsys):
    """ComfyUI (or OneDrive) holds a file of an old checkpoint open for the whole run."""
    data = tmp_path / "data"
    write_sample(data, "clip", frames=2, height=2, width=2, seed=0)
    output = tmp_path / "run"
    flaky_replace(monkeypatch, failures=10**6, when=lambda source, target: target.endswith(".deleting"))
    result = train(tiny_model_dir, data, output, **{"optimization.steps": 3, "checkpoints.interval": 1,
                                                    "checkpoints.keep_last_n": 1})
    assert result.final_step == 3 and result.lora_path.is_file()
    assert [step for step, _ in checkpoints.list_checkpoints(output)] == [1, 2, 3]  # none could be deleted
    assert "could not delete the old checkpoint" in capsys.readouterr().err


# ---- a system proxy in front of the GUI ---------------------------------------------------------

@pytest.mark.parametrize(
    ("environ", "registry", "expected"),
    [
        ({}, {}, {"NO_PROXY": "localhost,127.0.0.1,::1"}),
        # Clash in Windows' settings only: copied, so the API captioner keeps using it
        ({}, {"http": "http://127.0.0.1:7890", "https": "http://127.0.0.1:7890"},
         {"HTTP_PROXY": "http://127.0.0.1:7890", "HTTPS_PROXY": "http://127.0.0.1:7890",
          "NO_PROXY": "localhost,127.0.0.1,::1"}),
        # the environment's proxy wins over the registry's, as in Python itself
        ({"HTTPS_PROXY": "http://proxy.corp:8080"}, {"https": "http://127.0.0.1:7890"},
         {"NO_PROXY": "localhost,127.0.0.1,::1"}),
        # existing entries in either spelling are kept
        ({"no_proxy": "corp.local", "NO_PROXY": "10.0.0.0/8,localhost"}, {},
         {"NO_PROXY": "corp.local,10.0.0.0/8,localhost,127.0.0.1,::1"}),
    ],
)
def test_loopback_bypasses_the_proxy_and_everything_else_keeps_it(environ, registry, expected):
    updates = desktop.proxy_environment(environ, registry)
    assert updates.pop("no_proxy") == updates["NO_PROXY"]
    assert updates == expected


def test_the_gui_starts_behind_a_dead_system_proxy(tmp_path):
    """A proxy left configured but not running (a closed VPN client) made gradio's startup check fail."""
    with socket.socket() as sock:  # a port nothing listens on: connections to the "proxy" are refused
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env.update(HTTP_PROXY=dead, HTTPS_PROXY=dead, ALL_PROXY=dead, OMP_NUM_THREADS="1")
    command = [sys.executable, str(REPO / "scripts" / "minimal_ui.py"), "--port", "7930", "--lang", "en"]
    for name in ("train-date", "datasets", "outputs", "models"):
        command += [f"--{name}-dir", str(tmp_path / name)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               encoding="utf-8", env=env)
    try:
        line = process.stdout.readline()  # the URL line, or nothing when the server failed
        if not line:
            pytest.fail(process.communicate(timeout=30)[1][-3000:])
        url = line.split()[2]
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=30) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.mark.parametrize(
    ("environ", "tty", "platform", "opens"),
    [
        ({}, True, "win32", True),  # double-clicked run.cmd
        ({}, True, "darwin", True),
        ({"DISPLAY": ":0"}, True, "linux", True),
        ({}, True, "linux", False),  # SSH without a display: a text browser would take over the terminal
        ({}, False, "win32", False),  # started by another program, output redirected
        ({"CI": "true"}, True, "win32", False),
        ({"PYTEST_CURRENT_TEST": "x"}, True, "win32", False),
        ({"LTXT_NO_BROWSER": "1"}, True, "win32", False),
    ],
)
def test_the_browser_opens_only_for_a_person_at_a_desktop(monkeypatch, environ, tty, platform, opens):
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"isatty": lambda self: tty})())
    assert desktop.should_open_browser(environ) is opens


# ---- options that compile code on first use -----------------------------------------------------

def template_config(name: str, **acceleration) -> TrainerConfig:
    data = yaml.safe_load((REPO / "configs" / name).read_text(encoding="utf-8"))
    data["acceleration"].update(acceleration)
    return config_from_dict(data)


@pytest.mark.parametrize(
    ("template", "acceleration", "capability", "refused"),
    [
        ("ltx_13b_lora_int8-quanto_template.yaml", {}, (8, 9), []),  # the 24 GB template as shipped
        ("ltx_13b_lora_int8-quanto_template.yaml", {}, None, []),
        ("ltx_2b_lora_template.yaml", {}, (7, 5), []),
        ("ltx_2b_lora_template.yaml", {"quantization": "int2-quanto"}, (8, 9), ["int2-quanto"]),
        ("ltx_2b_lora_template.yaml", {"quantization": "int4-quanto"}, (8, 9), []),  # bf16 on Ada: torch's int4
        ("ltx_2b_lora_template.yaml", {"quantization": "int4-quanto"}, (7, 5), ["int4-quanto"]),  # RTX 20xx
        ("ltx_2b_lora_template.yaml", {"quantization": "int4-quanto"}, None, ["int4-quanto"]),  # CPU
        ("ltx_2b_lora_template.yaml", {"quantization": "int4-quanto", "mixed_precision_mode": "fp16"}, (8, 9),
         ["int4-quanto"]),
        ("ltx_2b_lora_template.yaml", {"quantization": "fp8-quanto"}, (8, 9), []),
        ("ltx_2b_lora_template.yaml", {"quantization": "fp8-quanto", "mixed_precision_mode": "fp16"}, (8, 9),
         ["fp8-quanto"]),
        ("ltx_2b_lora_template.yaml", {"quantization": "fp8uz-quanto", "mixed_precision_mode": "fp16"}, (8, 9),
         ["fp8uz-quanto"]),
        ("ltx_2b_lora_template.yaml", {"compile_with_inductor": True}, (8, 9), ["compile_with_inductor"]),
        ("ltx_2b_lora_template.yaml", {"compile_with_inductor": True, "quantization": "int2-quanto"}, (8, 9),
         ["int2-quanto", "compile_with_inductor"]),
    ],
)
def test_options_that_need_a_compiler_are_refused_on_windows_with_the_alternative(template, acceleration, capability,
                                                                                  refused):
    config = template_config(template, **acceleration)
    platform_checks.refuse_options_needing_a_compiler("linux", config, capability)  # Linux has g++: never refused
    if not refused:
        platform_checks.refuse_options_needing_a_compiler("win32", config, capability)
        return
    with pytest.raises(ConfigError) as error:
        platform_checks.refuse_options_needing_a_compiler("win32", config, capability)
    message = str(error.value)
    assert message.count("\n- ") == len(refused)  # one line per refused option, naming it
    assert all(f"acceleration.{name}" in message or f"quantization: {name}" in message for name in refused)
    assert "int8-quanto" in message or "false" in message  # the alternative


def test_the_trainer_refuses_a_compiler_option_on_windows_before_loading_the_model(monkeypatch, tmp_path):
    """The check must be wired into the trainer, not only exist: on win32 an int2 run stops at once,
    before the (missing) model folder is even looked at."""
    monkeypatch.setattr(sys, "platform", "win32")
    config = make_config(tmp_path / "no model here", tmp_path / "no data", tmp_path / "run",
                         **{"acceleration.quantization": "int2-quanto"})
    with pytest.raises(ConfigError, match="int2-quanto"):
        run_training(config_from_dict(config))
    assert not (tmp_path / "run").exists()


# ---- modules Windows lacks ----------------------------------------------------------------------

def test_the_benchmark_starts_without_the_resource_module():
    """Windows has no `resource` module; the benchmark imported it unconditionally and could not start
    (and then read the CPU peak through it)."""
    # The libraries are imported first (on Linux some of them use `resource` themselves); then the
    # module is made unimportable, as it is on Windows, and the benchmark script starts.
    code = ("import runpy, sys; import ltxtrainer.config, ltxtrainer.memory, ltxtrainer.models.ltx_video; "
            "sys.modules['resource'] = None; sys.argv = ['benchmark.py', '--model', 'tiny', '--resolution', "
            "'64x64x9', '--steps', '1', '--warmup', '1', '--skip-plain', '--json']; "
            f"runpy.run_path({str(REPO / 'scripts' / 'benchmark.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])  # it measures, not only starts
    assert report["step_time_s"] > 0 and report["peak_memory_bytes"] == 0, report  # no CPU figure there
