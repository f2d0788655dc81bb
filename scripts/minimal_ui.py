"""Open the ltxtrainer GUI (Gradio) in the browser: pipeline, parameters, captions, runs, export.

    python scripts/minimal_ui.py [--port N] [--lang zh|en]
    python scripts/minimal_ui.py --listen|--share --username NAME --password PASS

Binds 127.0.0.1 on port 7860 or the next free one. --listen (all interfaces) and --share (a
public Gradio link) expose a GUI that starts processes and writes files, so they require a
username and password (flags, or the environment variables LTXT_UI_USER / LTXT_UI_PASSWORD).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltxtrainer.desktop import bypass_proxy_for_loopback  # noqa: E402

bypass_proxy_for_loopback()  # before anything imports gradio or httpx: a system proxy must not see 127.0.0.1

from ltxtrainer.ui.i18n import LANGUAGES, default_language  # noqa: E402
from ltxtrainer.ui.settings import load_settings  # noqa: E402
from ltxtrainer.ui.workspace import AppPaths  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, help="port to try first (default 7860; the next free one is used)")
    parser.add_argument("--listen", action="store_true", help="listen on all interfaces (needs a password)")
    parser.add_argument("--share", action="store_true", help="create a public Gradio link (needs a password)")
    parser.add_argument("--username", default=os.environ.get("LTXT_UI_USER"), help="login name (env LTXT_UI_USER)")
    parser.add_argument("--password", default=os.environ.get("LTXT_UI_PASSWORD"),
                        help="login password (env LTXT_UI_PASSWORD)")
    parser.add_argument("--lang", choices=LANGUAGES, help="interface language (default: last used, else the system's)")
    parser.add_argument("--train-date-dir", type=Path, default=REPO_ROOT / "train_date", help="folder of projects")
    parser.add_argument("--datasets-dir", type=Path, default=REPO_ROOT / "datasets", help="scene clips and captions")
    parser.add_argument("--outputs-dir", type=Path, default=REPO_ROOT / "outputs", help="runs, exports, GUI state")
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models", help="model folders")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    auth = (args.username, args.password) if args.username and args.password else None
    if (args.listen or args.share) and auth is None:
        print(
            "Refusing to start: --listen and --share make this GUI reachable from other machines, and it starts "
            "processes and writes files. Give a username and password with --username/--password or the "
            "environment variables LTXT_UI_USER and LTXT_UI_PASSWORD.",
            file=sys.stderr,
        )
        return 2
    if args.listen or args.share:
        print("WARNING: the GUI is reachable beyond this computer (login required). Use a strong password.",
              file=sys.stderr)
    paths = AppPaths(root=REPO_ROOT, train_date=args.train_date_dir.resolve(), datasets=args.datasets_dir.resolve(),
                     outputs=args.outputs_dir.resolve(), models=args.models_dir.resolve())
    for folder in (paths.train_date, paths.outputs):
        folder.mkdir(parents=True, exist_ok=True)
    language = args.lang or load_settings(paths.settings_file).get("language") or default_language()

    import httpx

    from ltxtrainer.ui.app import launch

    try:
        _, url = launch(paths, language=language, port=args.port, listen=args.listen, share=args.share, auth=auth,
                        prevent_thread_lock=True)
    except (OSError, httpx.HTTPError) as error:
        return _could_not_start(error)
    except Exception as error:
        # gradio 6.31 raises a bare Exception when its check of the started server gets an error
        # status (a proxy answering 502); any other exception is a bug and keeps its traceback.
        if type(error) is not Exception:
            raise
        return _could_not_start(error)
    print(f"ltxtrainer GUI: {url}  (Ctrl+C to quit; running jobs keep going)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def _could_not_start(error: BaseException) -> int:
    print(
        f"Could not start the GUI server: {type(error).__name__}: {error}\n"
        "If a proxy or VPN is on (Clash, v2rayN, a company proxy), let it bypass 127.0.0.1 and localhost, or set "
        f"the environment variable NO_PROXY=localhost,127.0.0.1,::1, then start again (NO_PROXY is now "
        f"{os.environ.get('NO_PROXY', '')!r}).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
