"""How the GUI process fits the user's desktop: a system proxy, and whether to open a browser.

A proxy (Clash, v2rayN, a company proxy) set in Windows' Internet settings applies to every HTTP
request Python makes, including gradio's own check of the server it just started on 127.0.0.1
(gradio 6.31 `Blocks.launch` fetches `<local url>/startup-events` with httpx). Through a proxy
that check fails (the proxy cannot reach the user's 127.0.0.1) and the GUI never starts. So
before gradio is imported, loopback addresses go into NO_PROXY, and a proxy that came only from
the registry is first copied into HTTP(S)_PROXY: once any *_PROXY variable is set, Python and
httpx ignore the registry, and the API captioner (an OpenAI-compatible service abroad) still
needs that proxy.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping, MutableMapping

LOOPBACK = ("localhost", "127.0.0.1", "::1")
NO_BROWSER_ENV = "LTXT_NO_BROWSER"


def proxy_environment(environ: Mapping[str, str], system_proxies: Mapping[str, str]) -> dict[str, str]:
    """The environment variables to set so loopback bypasses any proxy and other traffic keeps it.

    `system_proxies`: what the OS configures outside the environment (on Windows the registry, as
    `urllib.request.getproxies_registry()` reads it: {"http": "http://127.0.0.1:7890", ...}; on
    macOS the system settings).
    Existing NO_PROXY entries (either spelling; Python prefers the lower-case one) are kept.
    """
    updates: dict[str, str] = {}
    has_env_proxy = any(environ.get(name) for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"))
    if not has_env_proxy:
        for scheme in ("http", "https"):
            if system_proxies.get(scheme):
                updates[f"{scheme.upper()}_PROXY"] = system_proxies[scheme]
    entries: list[str] = []
    for name in ("no_proxy", "NO_PROXY"):
        for entry in environ.get(name, "").split(","):
            if entry.strip() and entry.strip() not in entries:
                entries.append(entry.strip())
    entries += [host for host in LOOPBACK if host not in entries]
    updates["NO_PROXY"] = updates["no_proxy"] = ",".join(entries)
    return updates


def bypass_proxy_for_loopback(environ: MutableMapping[str, str] = os.environ) -> None:
    """Apply `proxy_environment` to this process; call it before gradio (and httpx) are imported."""
    if sys.platform == "win32":
        system = urllib.request.getproxies_registry()
    elif sys.platform == "darwin":  # System Settings' proxy, which Python likewise stops reading
        system = urllib.request.getproxies_macosx_sysconf()
    else:  # Linux desktops' proxy settings reach programs only through the environment
        system = {}
    environ.update(proxy_environment(environ, system))


def should_open_browser(environ: Mapping[str, str] = os.environ) -> bool:
    """Open the GUI in the browser for a person at a desktop, never in tests, CI or over SSH.

    Without a display Python's `webbrowser` falls back to text browsers (w3m, lynx) that would take
    over the terminal the server runs in.
    """
    if environ.get(NO_BROWSER_ENV) or environ.get("CI") or environ.get("PYTEST_CURRENT_TEST"):
        return False
    if not (sys.stdin is not None and sys.stdin.isatty()):
        return False
    return sys.platform in ("win32", "darwin") or bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))
