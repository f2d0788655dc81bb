"""The API captioner against a real OpenAI-compatible HTTP server on 127.0.0.1.

The server is a few lines of http.server in a thread, answering /v1/chat/completions the way
OpenAI, Moonshot, vLLM and Ollama do, scripted per test to rate-limit, refuse the key, break
down mid-run or echo the Authorization header back into its error messages.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltxtrainer.captioning import FatalCaptionError, caption_clips
from ltxtrainer.captioning.api import APICaptioner
from ltxtrainer.synthetic import make_clip, scene_frames

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-FAKE-4f9c2e7b1d-do-not-leak"
MODEL = "vision-test-model"
Answer = tuple[int, dict, bytes]  # status, extra headers, body


def completion(text: str) -> Answer:
    body = {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
    }  # fmt: skip
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def error(status: int, message: str, code: str | None = None, headers: dict | None = None) -> Answer:
    body = {"error": {"message": message, "type": "test_error", "code": code}}
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


class ChatServer:
    """A real HTTP server; `answer(index, request)` decides each reply, every request is kept."""

    def __init__(self, answer: Callable[[int, dict], Answer]):
        self.answer = answer
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = {"path": self.path, "headers": headers, "body": body}
                with server.lock:
                    index = len(server.requests)
                    server.requests.append(request)
                status, headers, payload = server.answer(index, request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(answer: Callable[[int, dict], Answer]) -> ChatServer:
        servers.append(ChatServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def captioner_for(server: ChatServer, **options) -> APICaptioner:
    options = {"max_retries": 2, "backoff_s": 0.01, "concurrency": 1, **options}
    return APICaptioner(server.url, MODEL, FAKE_KEY, key_source="the environment variable TEST_KEY", **options)


def make_clips(folder: Path, count: int) -> list[Path]:
    return [make_clip(folder / f"clip_{index}.mp4", 64, 48, (9,), 8) for index in range(count)]


def test_request_names_the_model_attaches_every_frame_and_sends_the_key(serve):
    server = serve(lambda index, request: completion("  A red square\n slides right.  "))
    frames = list(scene_frames(96, 64, 3))
    with captioner_for(server) as captioner:
        caption = captioner.caption(frames, "Describe the video.")
    assert caption == "A red square slides right."
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {FAKE_KEY}"
    assert request["body"]["model"] == MODEL
    parts = request["body"]["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "Describe the video."}
    images = [part["image_url"]["url"] for part in parts if part["type"] == "image_url"]
    assert len(images) == 3
    header, encoded = images[0].split(",", 1)
    assert header == "data:image/jpeg;base64"
    assert Image.open(io.BytesIO(base64.b64decode(encoded))).size == (96, 64)


def test_rate_limit_is_retried_and_then_succeeds(serve):
    answers = [error(429, "slow down", headers={"Retry-After": "0"}), completion("A blue scene.")]
    server = serve(lambda index, request: answers[index])
    with captioner_for(server) as captioner:
        assert captioner.caption(list(scene_frames(64, 48, 2)), "Describe.") == "A blue scene."
    assert len(server.requests) == 2


def test_wrong_key_stops_the_stage_with_one_line_naming_the_fix(serve, tmp_path):
    # A badly configured proxy echoes the header back: the message must still not show the key.
    server = serve(lambda index, request: error(401, f"invalid key {request['headers']['authorization']}"))
    make_clips(tmp_path, 3)
    with captioner_for(server) as captioner:
        with pytest.raises(FatalCaptionError) as raised:
            captioner.caption(list(scene_frames(64, 48, 2)), "Describe.")
        report = caption_clips(tmp_path, captioner)
    message = str(raised.value)
    assert "refused the API key (HTTP 401" in message and "TEST_KEY" in message
    assert "\n" not in message and FAKE_KEY not in message
    assert len(report.failed) == 3 and not report.captioned
    assert len(server.requests) == 2, "a refused key is not retried, and the stage stops at the first refusal"


def test_unknown_model_and_unreachable_server_read_clearly(serve):
    server = serve(lambda index, request: error(404, f"The model `{MODEL}` does not exist.", "model_not_found"))
    with captioner_for(server) as captioner, pytest.raises(FatalCaptionError, match="--api-model"):
        captioner.caption(list(scene_frames(64, 48, 1)), "Describe.")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    with APICaptioner(closed_url, MODEL, FAKE_KEY, max_retries=1, backoff_s=0.01) as captioner:
        with pytest.raises(FatalCaptionError, match="cannot reach .* check --api-base-url"):
            captioner.caption(list(scene_frames(64, 48, 1)), "Describe.")


def test_server_breaking_mid_run_keeps_captions_and_a_rerun_finishes_only_the_rest(serve, tmp_path):
    healthy = threading.Event()

    def answer(index: int, request: dict) -> Answer:
        if index < 2 or healthy.is_set():
            return completion(f"Caption number {index}.")
        if index % 2:
            return 500, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>"
        return 200, {"Content-Type": "application/json"}, b'{"choices": [truncated'

    server = serve(answer)
    clips = make_clips(tmp_path / "my clips", 5)
    with captioner_for(server) as captioner:
        first = caption_clips(tmp_path / "my clips", captioner)
    assert first.captioned == ["clip_0.mp4", "clip_1.mp4"]
    assert [path for path, _ in first.failed] == ["clip_2.mp4", "clip_3.mp4", "clip_4.mp4"]
    assert all("HTTP 500" in reason or "not a chat completion" in reason for _, reason in first.failed)
    saved = json.loads((tmp_path / "my clips" / "captions.json").read_text(encoding="utf-8"))
    assert [entry["media_path"] for entry in saved] == ["clip_0.mp4", "clip_1.mp4"]
    assert [clip.with_suffix(".txt").exists() for clip in clips] == [True, True, False, False, False]

    healthy.set()
    requests_before = len(server.requests)
    with captioner_for(server) as captioner:
        second = caption_clips(tmp_path / "my clips", captioner)
    assert second.skipped == ["clip_0.mp4", "clip_1.mp4"]
    assert second.captioned == ["clip_2.mp4", "clip_3.mp4", "clip_4.mp4"] and second.complete
    assert len(server.requests) - requests_before == 3
    saved = json.loads((tmp_path / "my clips" / "captions.json").read_text(encoding="utf-8"))
    assert [entry["caption"] for entry in saved][:2] == ["Caption number 0.", "Caption number 1."]


def test_concurrency_is_bounded(serve, tmp_path):
    """The first two requests wait for each other, so two must be in flight, never three."""
    both_arrived = threading.Barrier(2, timeout=10)
    in_flight, peak, lock = [0], [0], threading.Lock()

    def answer(index: int, request: dict) -> Answer:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        if index < 2:
            both_arrived.wait()
        with lock:
            in_flight[0] -= 1
        return completion(f"Clip {index}.")

    server = serve(answer)
    make_clips(tmp_path, 5)
    with captioner_for(server, concurrency=2) as captioner:
        report = caption_clips(tmp_path, captioner)
    assert len(report.captioned) == 5
    assert peak[0] == 2


def test_command_line_never_leaks_the_key(serve, tmp_path):
    """The key goes in the header and nowhere else: not in captions, reasons, progress or logs."""

    def answer(index: int, request: dict) -> Answer:
        if index == 1:
            return error(400, f"bad request from {request['headers']['authorization']}")
        return completion(f"Clip {index} looks fine.")

    server = serve(answer)
    clips_dir = tmp_path / "train_date" / "风格 style"
    make_clips(clips_dir, 3)
    env = {**os.environ, "MY_VISION_KEY": FAKE_KEY, "PYTHONIOENCODING": "utf-8"}
    command = [
        sys.executable, str(REPO_ROOT / "scripts" / "caption_videos.py"), str(clips_dir), "--backend", "api",
        "--api-base-url", server.url, "--api-model", MODEL, "--api-key-env", "MY_VISION_KEY",
        "--trigger-word", "sks", "--concurrency", "1",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", env=env, timeout=120)
    assert result.returncode == 1
    assert "1 of 3 clips failed; re-run to finish them" in result.stderr
    assert "clip_1.mp4: the caption API" in result.stderr and "HTTP 400" in result.stderr
    assert all(request["headers"]["authorization"] == f"Bearer {FAKE_KEY}" for request in server.requests)
    written = [path for path in tmp_path.rglob("*") if path.is_file() and path.suffix != ".mp4"]
    assert {path.name for path in written} == {"captions.json", "clip_0.txt", "clip_2.txt"}
    for text in [result.stdout, result.stderr, *(path.read_text(encoding="utf-8") for path in written)]:
        assert FAKE_KEY not in text
        assert "4f9c2e7b1d" not in text
    summary = [json.loads(line) for line in result.stdout.splitlines() if '"summary"' in line][-1]
    assert summary["captioned"] == 2 and summary["failed"] == 1
    assert "[API key]" in summary["failures"][0]["reason"]


def test_an_image_goes_as_one_image_url_part_with_the_picture_instruction(serve, tmp_path):
    from ltxtrainer.captioning.base import DEFAULT_IMAGE_INSTRUCTION

    server = serve(lambda index, request: completion("A red card on a table."))
    folder = tmp_path / "stills"
    folder.mkdir()
    picture = scene_frames(96, 64, 1)[0]
    Image.fromarray(picture).save(folder / "红 card.png")
    with captioner_for(server) as captioner:
        report = caption_clips(folder, captioner, trigger_word="sks")
    assert report.captioned == ["红 card.png"] and report.complete
    assert (folder / "红 card.txt").read_text(encoding="utf-8").strip() == "sks, A red card on a table."
    [request] = server.requests
    parts = request["body"]["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": DEFAULT_IMAGE_INSTRUCTION}
    [image] = [part["image_url"]["url"] for part in parts if part["type"] == "image_url"]
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1]))).convert("RGB"))
    assert sent.shape == picture.shape and np.abs(sent.astype(int) - picture).mean() < 4  # the picture itself
