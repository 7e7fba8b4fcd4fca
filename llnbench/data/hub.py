"""Before anything asks the Hugging Face hub: offline, or can it be reached at all?

Without a network the hub clients retry for about half a minute (five HEAD requests with
back-off) before failing. ``require_hub`` fails at once instead: offline flags
(``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) leave the call to the client, which then reads its
local cache without any request; otherwise one TCP connection to the hub (or the proxy) with a
short timeout decides.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from llnbench.errors import DataError

OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
PROBE_TIMEOUT_S = 3.0


def offline_flag() -> str | None:
    """The offline variable that is set (``1``, ``true``, ``yes`` or ``on``), or None."""
    for name in OFFLINE_FLAGS:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return name
    return None


def hub_address() -> tuple[str, int]:
    """Host and port a hub request goes to first: the HTTPS proxy when one is set, else the hub
    (``HF_ENDPOINT``, default huggingface.co)."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(name):
            url = urlparse(
                os.environ[name] if "://" in os.environ[name] else f"//{os.environ[name]}"
            )
            return url.hostname or "", url.port or 8080
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to host:port opens within ``timeout`` (name lookup included),
    else why not."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err.strerror or type(err).__name__)

    thread = threading.Thread(target=probe, daemon=True)  # a stuck name lookup ignores timeout
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer in {timeout:g} s"


def require_hub(what: str, way_out: str, flag: str = "HF_DATASETS_OFFLINE") -> None:
    """Return when the hub may be asked for ``what``; else one DataError line naming the way out
    and the offline ``flag`` that serves a cached copy without asking.

    Offline flags return at once (the client then serves its cache, or fails fast itself)."""
    if offline_flag():
        return
    host, port = hub_address()
    why = reachable(host, port)
    if why is not None:
        raise DataError(
            f"{what} needs the network: cannot reach {host}:{port} ({why}); {way_out} "
            f"(with a copy in the HF cache, set {flag}=1 to use it)"
        )
