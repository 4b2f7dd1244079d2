"""The Ray dashboard of a search: how Ray is started for it, and what to print once it is up.

    ray.init(address="local", **ray_init_kwargs())     # dashboard on 127.0.0.1, metrics exported
    for line in dashboard_lines(): print(line)          # URL + how to authenticate (token file path)

Authentication: Ray 2.60 turns on token authentication for a new local cluster.
The token lives in $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else
~/.ray/auth_token (Ray creates it on first use). HTTP clients send
`Authorization: Bearer <token>`; the dashboard's login page takes the token once and
keeps it in a cookie. We print where the token is, never the token.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any, TextIO

from .workarounds import dashboard_webui_url, token_auth_enabled

__all__ = ["dashboard_lines", "dashboard_url", "format_dashboard_lines", "ray_init_kwargs", "token_auth_enabled",
           "token_source"]

TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
AUTH_HEADER = "Authorization"  # value: "Bearer <token>" (Ray also accepts X-Ray-Authorization)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.x, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ray_init_kwargs(dashboard_host: str = "127.0.0.1", dashboard_port: int | None = None, *,
                    metrics_export_port: int | None = None, stream: TextIO | None = None) -> dict[str, Any]:
    """Keyword arguments for `ray.init(address="local", ...)`: the dashboard on, bound to
    `dashboard_host`, and node metrics exported for Prometheus.

    dashboard_port None lets Ray pick (8265, or the next free port: parallel tests
    and searches do not collide). Ray always exports metrics; metrics_export_port
    None lets it pick a free port (ray.nodes() tells which). A host other than a
    loopback address gets a one-line warning on `stream` (stderr).
    """
    if not is_loopback(dashboard_host):
        print(f"warning: the Ray dashboard listens on {dashboard_host}, not only 127.0.0.1: anyone who can reach "
              f"this machine can open it; keep Ray's token auth on and the port firewalled",
              file=stream or sys.stderr)
    kwargs: dict[str, Any] = {"include_dashboard": True, "dashboard_host": dashboard_host}
    if dashboard_port is not None:
        kwargs["dashboard_port"] = int(dashboard_port)
    if metrics_export_port is not None:
        kwargs["_metrics_export_port"] = int(metrics_export_port)
    return kwargs


def dashboard_url() -> str | None:
    """The running Ray's dashboard URL (http://host:port), or None without a dashboard.

    Ray's public route is the context `ray.init()` returns (`.dashboard_url`); after
    the fact the same value is the connected node's webui_url (for `--address`, the
    cluster head's, read from the cluster's GCS).
    """
    import ray

    if not ray.is_initialized():
        return None
    url = os.environ.get("RAY_OVERRIDE_DASHBOARD_URL") or dashboard_webui_url()
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def token_source() -> tuple[str, Path | None]:
    """Where Ray reads the token from, in Ray's own order: ('env', None) for $RAY_AUTH_TOKEN,
    else ('file', path) for $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get(TOKEN_ENV):
        return "env", None
    path = os.environ.get(TOKEN_PATH_ENV)
    return "file", Path(path).expanduser() if path else Path.home() / ".ray" / "auth_token"


def dashboard_lines(address: str | None = None) -> list[str]:
    """What to print once Ray is up: the dashboard URL and how to authenticate.

    address: what the search joined (`--address`); the URL is then the cluster's.
    The token is never printed, only where it is.
    """
    return format_dashboard_lines(dashboard_url(), address, token_auth_enabled())


def format_dashboard_lines(url: str | None, address: str | None, auth_on: bool) -> list[str]:
    """dashboard_lines from its facts (the URL, what was joined, whether the token is needed)."""
    where = f"Ray cluster {address}" if address else "local Ray"
    if not url and address:  # the cluster's head was started without one: fersearch cannot add it
        return [f"{where}: the cluster runs no dashboard; to get one, start its head with "
                f"`ray start --head --include-dashboard=true`"]
    if not url:  # a local Ray asked for one: only missing packages stop it
        return [f"{where}: no dashboard (install ray[default] to get one)"]
    lines = [f"Ray dashboard ({where}): {url}"]
    head = _address_host(address)
    url_host = urllib.parse.urlparse(url).hostname or ""
    if head and is_loopback(url_host) and not is_loopback(head):
        port = urllib.parse.urlparse(url).port or 8265
        lines.append(f"  it listens on the head node's loopback only; from here: ssh -L {port}:localhost:{port} "
                     f"{head}, then open http://localhost:{port}")
    if not auth_on:
        lines.append("  token authentication is off for this cluster: anyone who reaches the URL can use it")
        return lines
    kind, path = token_source()
    if kind == "env":
        lines.append(f"  sign in with the token in ${TOKEN_ENV}; API clients send "
                     f"'{AUTH_HEADER}: Bearer <token>'")
    else:
        note = "" if path is not None and path.is_file() else " (on the head node)" if address else ""
        lines.append(f"  sign in with the token in {path}{note}; API clients send "
                     f"'{AUTH_HEADER}: Bearer $(cat {path})'")
    return lines


def _address_host(address: str | None) -> str | None:
    """The head's host from --address (host:port, ray://host:port); None for auto or nothing."""
    if not address or address in ("auto", "local"):
        return None
    return urllib.parse.urlparse(address if "://" in address else f"ray://{address}").hostname
