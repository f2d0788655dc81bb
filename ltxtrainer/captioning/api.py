"""The `api` backend: any OpenAI-compatible chat API with image input (Kimi/Moonshot, OpenAI, vLLM, Ollama).

Frames go as base64 data-URL `image_url` parts of one user message, which every one of those
servers accepts. Retries are ours, not the `openai` client's (its own are switched off), so the
rules are visible here: 429, 5xx, timeouts, dropped connections and unparseable answers are
retried with exponential backoff (honouring Retry-After); a wrong key (401/403), an unknown
model (404) or a server that cannot be reached at all stop the whole stage with one readable
line, because every other clip would fail the same way.

The API key is a secret the user pasted into a GUI field or an environment variable: every
message this module produces passes through `redact`, and the original exception is dropped
(`from None`), because a misconfigured proxy may echo request headers into its error body.
"""

from __future__ import annotations

import base64
import io
import random
import time

import numpy as np
import openai
from PIL import Image

from ltxtrainer.captioning.base import Captioner, CaptionError, FatalCaptionError, clean_caption

REDACTED = "[API key]"
MAX_RETRY_DELAY_S = 60.0


def encode_frame(frame: np.ndarray, image_format: str = "jpeg", max_side: int = 512) -> str:
    """A data URL of one RGB frame, shrunk so its longer side is at most `max_side` pixels.

    Captioning does not need full resolution, and every pixel costs upload time and API tokens.
    """
    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), mode="RGB")
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=90)
    return f"data:image/{image_format};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class APICaptioner(Captioner):
    """Captions frames with a chat-completions model; several clips may be in flight at once."""

    name = "api"

    def __init__(
        self,
        base_url: str | None,
        model: str,
        api_key: str,
        *,
        key_source: str = "the API key",
        concurrency: int = 4,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_tokens: int = 512,
        image_format: str = "jpeg",
        max_image_side: int = 512,
    ):
        if not model:
            raise FatalCaptionError("no model name: pass --api-model (for example moonshot-v1-8k-vision-preview or gpt-4o)")
        if not api_key:
            raise FatalCaptionError(
                f"no API key: set {key_source} (any text will do for a local server without keys, such as Ollama)"
            )
        if image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
        self._secrets = [secret for secret in {api_key, api_key.strip()} if len(secret) >= 4]
        self.model = model
        self.key_source = key_source
        self.parallel_requests = max(1, concurrency)
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self.image_format = image_format
        self.max_image_side = max_image_side
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.base_url = str(self._client.base_url).rstrip("/")

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def caption(self, frames: list[np.ndarray], instruction: str) -> str:
        content: list[dict] = [{"type": "text", "text": instruction}]
        content += [
            {"type": "image_url", "image_url": {"url": encode_frame(frame, self.image_format, self.max_image_side)}}
            for frame in frames
        ]
        messages = [{"role": "user", "content": content}]
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=self.max_tokens
                )
                return self._caption_from(response)
            except (openai.APIError, _MalformedAnswer, ValueError) as error:
                retry, fatal, reason = self._classify(error)
                if not retry or attempt == self.max_retries:
                    tries = f" (gave up after {attempt + 1} attempts)" if attempt else ""
                    error_type = FatalCaptionError if fatal else CaptionError
                    raise error_type(self.redact(reason + tries)) from None
                time.sleep(self._retry_delay(error, attempt))
        raise AssertionError("unreachable: the loop returns or raises")

    def close(self) -> None:
        self._client.close()

    def _caption_from(self, response: object) -> str:
        """The first choice's text, or `_MalformedAnswer` for anything that is not a chat completion."""
        choices = getattr(response, "choices", None)
        if not choices:
            raise _MalformedAnswer("the caption API answered with something that is not a chat completion")
        message = getattr(choices[0], "message", None)
        text = clean_caption(getattr(message, "content", None) or "")
        if not text:
            refusal = getattr(message, "refusal", None)
            raise CaptionError(self.redact(f"the model returned no caption{f' (refusal: {refusal})' if refusal else ''}"))
        return text

    def _classify(self, error: Exception) -> tuple[bool, bool, str]:
        """(retry?, fatal for the whole stage?, one readable line) for an error from the client."""
        where = f"the caption API at {self.base_url}"
        if isinstance(error, (_MalformedAnswer, ValueError)):  # ValueError: the client could not parse the JSON
            return True, False, "the caption API answered with something that is not a chat completion"
        if isinstance(error, openai.APITimeoutError):
            return True, False, f"{where} did not answer in time"
        if isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error
            return True, True, (
                f"cannot reach {where} ({type(cause).__name__}: {_first_line(cause)}); "
                "check --api-base-url and that the server is running"
            )
        if isinstance(error, openai.APIResponseValidationError):
            return True, False, "the caption API answered with something that is not a chat completion"
        if not isinstance(error, openai.APIStatusError):
            return False, False, f"{where} failed: {_first_line(error)}"
        status, detail = error.status_code, _server_message(error)
        if status in (401, 403):
            return False, True, (
                f"{where} refused the API key (HTTP {status}: {detail}); check {self.key_source}: "
                "it must hold a valid key for this server"
            )
        if status == 404:
            if "model" in detail.lower() or _error_code(error) == "model_not_found":
                return False, True, (
                    f"model {self.model!r} was not found by {where} (HTTP 404: {detail}); "
                    "check --api-model against the server's model list"
                )
            return False, True, (
                f"{where} has no chat-completions endpoint (HTTP 404: {detail}); "
                "check --api-base-url (it usually ends in /v1)"
            )
        if status == 429:
            if _error_code(error) == "insufficient_quota":
                return False, True, f"{where} says the account has no quota left (HTTP 429: {detail})"
            return True, False, f"{where} kept rate-limiting the requests (HTTP 429: {detail}); lower --concurrency"
        if status >= 500 or status == 408:
            return True, False, f"{where} failed (HTTP {status}: {detail})"
        return False, False, f"{where} rejected the request (HTTP {status}: {detail})"

    def _retry_delay(self, error: Exception, attempt: int) -> float:
        """Exponential backoff with a little jitter, or the server's Retry-After if it asks for longer."""
        delay = self.backoff_s * 2**attempt * (1 + 0.25 * random.random())
        response = getattr(error, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        try:
            delay = max(delay, float(retry_after)) if retry_after else delay
        except ValueError:
            pass  # an HTTP date instead of seconds: keep our own delay
        return min(delay, MAX_RETRY_DELAY_S)


class _MalformedAnswer(Exception):
    """A 200 answer that is not a chat completion (a proxy's HTML page, truncated JSON)."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _server_message(error: openai.APIStatusError) -> str:
    """The server's own words: `error.message` of an OpenAI-style body, else the raw text, shortened."""
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return " ".join(str(message).split())[:200]
    try:
        text = error.response.text
    except Exception:  # a streamed or closed response has no text to show
        text = ""
    return " ".join(text.split())[:200] or (error.response.reason_phrase or "no message")


def _error_code(error: openai.APIStatusError) -> str | None:
    return getattr(error, "code", None) or None
