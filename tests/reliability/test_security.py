"""A GUI that lets no one in, names that cannot escape, no shell strings, no secrets on disk, no pickles."""

from __future__ import annotations

import ast
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ltxtrainer.models.folder import check_model_folder
from ltxtrainer.pipeline import PipelineError, check_project_name
from ltxtrainer.ui.app import free_port, launch
from ltxtrainer.ui.jobs import JobRunner
from ltxtrainer.ui.workspace import AppPaths, UnsafePathError, safe_join
from tests.reliability.conftest import REPO
from tests.test_captioning_api import MODEL, ChatServer, completion, make_clips

SOURCES = sorted([*(REPO / "ltxtrainer").rglob("*.py"), *(REPO / "scripts").glob("*.py")])


@pytest.fixture
def app_paths(tmp_path, tiny_model_dir) -> AppPaths:
    return AppPaths(root=REPO, train_date=tmp_path / "train_date", datasets=tmp_path / "datasets",
                    outputs=tmp_path / "outputs", models=tiny_model_dir.parent, configs=REPO / "configs")


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the listening TCP sockets on `port`, read from the kernel's own table."""
    addresses = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).is_file():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                addresses.add(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6,
                                               bytes.fromhex(address)[::-1] if width == 8 else _ipv6(address)))
    return addresses


def _ipv6(address: str) -> bytes:
    raw = bytes.fromhex(address)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads the Linux socket table")
def test_gui_binds_loopback_only_by_default(app_paths, outcome):
    runner = JobRunner(app_paths.jobs)
    demo, url = launch(app_paths, language="en", port=free_port(7990), prevent_thread_lock=True, runner=runner)
    try:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        addresses = listening_addresses(port)
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
    finally:
        demo.close()
        runner.close()
    assert addresses == {"127.0.0.1"}
    outcome(
        fault="GUI network exposure (default launch)",
        tried="ltxtrainer.ui.app.launch() with no --listen/--share, then the kernel's table of listening sockets",
        happened=f"served {url}; listening only on {sorted(addresses)}",
        kept="nothing reachable from other machines",
    )


def test_gui_refuses_listen_or_share_without_a_password(app_paths, outcome):
    with pytest.raises(ValueError, match="username and password") as raised:
        launch(app_paths, language="en", listen=True, prevent_thread_lock=True)
    with pytest.raises(ValueError, match="username and password"):
        launch(app_paths, language="en", share=True, prevent_thread_lock=True)
    env = {key: value for key, value in os.environ.items() if key not in ("LTXT_UI_USER", "LTXT_UI_PASSWORD")}
    messages = []
    for flag in ("--listen", "--share"):
        result = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "minimal_ui.py"), flag, "--outputs-dir", str(app_paths.outputs)],
            capture_output=True, text=True, encoding="utf-8", env=env, timeout=120,
        )
        assert result.returncode != 0 and "Refusing to start" in result.stderr and "--password" in result.stderr
        messages.append(result.stderr.strip())
    outcome(
        fault="GUI started with --listen/--share and no login",
        tried="launch(listen=True) and launch(share=True) without auth; scripts/minimal_ui.py --listen / --share",
        happened=f"launch: ValueError '{raised.value}'; script: {messages[0]}",
        kept="no server started",
    )


def test_gui_with_listen_and_a_password_asks_for_the_login(app_paths, outcome):
    runner = JobRunner(app_paths.jobs)
    demo, url = launch(app_paths, language="en", port=free_port(8090), listen=True, auth=("admin", "pa55 word"),
                       prevent_thread_lock=True, runner=runner)
    try:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        request = urllib.request.Request(f"http://127.0.0.1:{port}/config")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
    finally:
        demo.close()
        runner.close()
    assert refused.value.code in (401, 403)
    outcome(
        fault="GUI on all interfaces with a login",
        tried="launch(listen=True, auth=(user, password)); GET /config without logging in",
        happened=f"HTTP {refused.value.code}",
        kept="the app's config and endpoints stay behind the login",
    )


ESCAPES = ["..", "../x", "a/../../b", "/etc/passwd", "\\\\server\\share", "C:\\Windows", "C:evil", "~root"]


@pytest.mark.parametrize("name", ESCAPES)
def test_project_names_and_paths_cannot_escape(tmp_path, name, outcome):
    with pytest.raises(PipelineError) as named:
        check_project_name(name)
    if name != "~root":  # "~" stays a literal folder name inside base for safe_join, which is safe
        with pytest.raises(UnsafePathError):
            safe_join(tmp_path, name)
    outcome(
        fault=f"Project name / GUI path {name!r}",
        tried="pipeline.check_project_name and ui.workspace.safe_join",
        happened=str(named.value),
        kept="nothing created outside the project folders",
    )


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def test_subprocesses_get_argument_lists_never_shell_strings(outcome):
    found = []
    for source in SOURCES:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for call in _calls(tree):
            name = _dotted(call.func)
            shell = any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                        for k in call.keywords)
            if shell or name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                found.append(f"{source.relative_to(REPO)}:{call.lineno} {name}")
    assert not found
    outcome(
        fault="Shell injection through file names or trigger words",
        tried=f"AST scan of {len(SOURCES)} files in ltxtrainer/ and scripts/ for shell=True, os.system, os.popen, "
        "subprocess.getoutput",
        happened="none found: every subprocess gets an argument list",
        kept="-",
    )


def test_weights_load_with_safetensors_and_a_bin_only_model_is_refused(tiny_model_dir, tmp_path, outcome):
    unsafe = []
    for source in SOURCES:
        for call in _calls(ast.parse(source.read_text(encoding="utf-8"))):
            name = _dotted(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            if name == "torch.load" and not (
                isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value is True
            ):
                unsafe.append(f"{source.relative_to(REPO)}:{call.lineno} torch.load without weights_only=True")
            if name in ("pickle.load", "pickle.loads"):
                unsafe.append(f"{source.relative_to(REPO)}:{call.lineno} {name}")
    assert not unsafe

    pickled = tmp_path / "pickled model"
    shutil.copytree(tiny_model_dir, pickled)
    for weights in (pickled / "transformer").glob("*.safetensors*"):
        weights.unlink()
    (pickled / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    report = check_model_folder(pickled)
    assert not report.ok
    message = report.message()
    assert "only pickle (.bin) weights" in message and "safetensors" in message
    outcome(
        fault="Pickle weights (.bin-only model folder)",
        tried="check_model_folder on the tiny model with its transformer's safetensors replaced by a .bin; AST scan "
        "for torch.load without weights_only=True and pickle.load",
        happened=" ".join(message.split())[:400],
        kept="nothing loaded; no unsafe loader in the code",
    )


def test_api_key_is_never_written_anywhere(tmp_path, outcome):
    key = "sk-RELIABILITY-7a1f3c9e55-never-on-disk"
    server = ChatServer(lambda index, request: completion(f"Clip {index} shows a moving square."))
    clips_dir = tmp_path / "train_date" / "风格 style"
    make_clips(clips_dir, 2)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "MY_VISION_KEY": key, "HOME": str(home), "USERPROFILE": str(home),
           "XDG_CACHE_HOME": str(home / ".cache"), "PYTHONIOENCODING": "utf-8"}
    command = [
        sys.executable, str(REPO / "scripts" / "caption_videos.py"), str(clips_dir), "--backend", "api",
        "--api-base-url", server.url, "--api-model", MODEL, "--api-key-env", "MY_VISION_KEY", "--concurrency", "1",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", env=env, timeout=120,
                                cwd=tmp_path)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(request["headers"]["authorization"] == f"Bearer {key}" for request in server.requests)
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    leaks = [path for path in written if key.encode() in path.read_bytes() or b"7a1f3c9e55" in path.read_bytes()]
    assert not leaks and key not in result.stdout + result.stderr
    outcome(
        fault="API key written to disk or logs",
        tried="scripts/caption_videos.py with a recognisable key (env var) against a local server, HOME in the "
        f"test folder; every file under it grepped ({len(written)} files) plus stdout/stderr",
        happened="the key reached the server's Authorization header only",
        kept="captions written; no file or log line holds the key",
    )
