"""Opening a captioner by backend name, the one switch the CLI, the pipeline and the GUI share."""

from __future__ import annotations

import os
from pathlib import Path

from ltxtrainer.captioning.base import Captioner

BACKENDS = ("llava", "qwen", "api", "files", "demo")
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"


def open_captioner(
    backend: str,
    *,
    api_base_url: str | None = None,
    api_model: str | None = None,
    api_key: str | None = None,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    concurrency: int = 4,
    model_path: str | Path | None = None,
    quantization: str | None = None,
    max_new_tokens: int = 256,
    captions_from: str | Path | None = None,
) -> Captioner:
    """Build the named backend; `api_key` (from the GUI) wins over the environment variable."""
    if backend == "api":
        from ltxtrainer.captioning.api import APICaptioner

        key_source = "the API key field" if api_key else f"the environment variable {api_key_env} (or --api-key-env NAME)"
        return APICaptioner(
            api_base_url,
            api_model or "",
            api_key or os.environ.get(api_key_env, ""),
            key_source=key_source,
            concurrency=concurrency,
        )
    if backend in ("llava", "qwen"):
        from ltxtrainer.captioning.local import LocalVLMCaptioner

        return LocalVLMCaptioner(backend, model_path, quantization=quantization, max_new_tokens=max_new_tokens)
    if backend == "files":
        from ltxtrainer.captioning.files import FileCaptioner

        return FileCaptioner(captions_from)
    if backend == "demo":
        from ltxtrainer.captioning.demo import DemoCaptioner

        return DemoCaptioner()
    raise ValueError(f"unknown captioning backend {backend!r}; choose one of {', '.join(BACKENDS)}")
