"""How a command finds the running system without flags.

``transcode-energy up`` writes ``endpoint.json`` (the NATS URL without credentials, its pid, the gateway's
URL) in its data directory and points ``$XDG_STATE_HOME/transcode-energy/current.json`` (default
``~/.local/state/...``) at it. A client command looks, in order: ``--nats-url``/``NATS_URL``;
``./var/nats/endpoint.json`` of a live ``up`` in the current directory (a checkout's own system wins over
whichever ``up`` started last elsewhere); the per-user pointer to a live ``up``; else the NATS default.
Standard library only: client commands must start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from shared.config import redact_url

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
ENDPOINT_FILE = "endpoint.json"
DEFAULT_DATA_DIR = Path("var/nats")


def _state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "transcode-energy"


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_endpoint(data_dir: Path, nats_url: str, metrics_url: str | None) -> Path:
    """Record where the running system is (no credentials), and make it the current one for this user."""
    data_dir.mkdir(parents=True, exist_ok=True)
    record = {"nats_url": redact_url(nats_url), "pid": os.getpid(), "metrics_url": metrics_url}
    path = data_dir / ENDPOINT_FILE
    path.write_text(json.dumps(record) + "\n")
    with contextlib.suppress(OSError):
        state = _state_dir()
        state.mkdir(parents=True, exist_ok=True)
        (state / "current.json").write_text(json.dumps({"endpoint": str(path.resolve())}) + "\n")
    return path


def remove_endpoint(data_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (data_dir / ENDPOINT_FILE).unlink()


def _read(path: Path) -> dict[str, object] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def find_endpoint() -> tuple[Path, dict[str, object]] | None:
    """(where it was found, the endpoint record) of a live ``up``, or None: the current directory's first,
    then the one the per-user pointer names."""
    candidates: list[Path] = [DEFAULT_DATA_DIR / ENDPOINT_FILE]
    pointer = _read(_state_dir() / "current.json")
    if pointer and isinstance(pointer.get("endpoint"), str):
        candidates.append(Path(str(pointer["endpoint"])))
    for path in candidates:
        record = _read(path)
        if record and _alive(record.get("pid")) and isinstance(record.get("nats_url"), str):
            return path.resolve(), record
    return None


def find_nats_url(explicit: str | None) -> tuple[str, str]:
    """(URL, where it came from) for a client command."""
    if explicit:
        return explicit, "--nats-url/NATS_URL"
    found = find_endpoint()
    if found is not None:
        path, record = found
        where = path.parent
        return str(record["nats_url"]), f"the running 'transcode-energy up' of {where} (pid {record['pid']})"
    return DEFAULT_NATS_URL, "the default (no running 'transcode-energy up' found)"
