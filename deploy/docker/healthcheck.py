#!/usr/bin/env python3
"""Container health probe: ``te-healthcheck [URL] [--timeout S]``, exit 0 when URL answers 200.

Why not ``transcode-energy healthcheck``: that command builds the whole CLI first, importing every service
(numpy, scipy, nats), about 1.8 s of CPU per probe; Docker runs a probe every interval in every container.
This file imports only the standard library and costs a few milliseconds.

Without URL (the image's default HEALTHCHECK) it probes ``HEALTHCHECK_URL`` when set, otherwise the port the
container's main process really serves, read from that process's command line (``/proc/1/cmdline``) and,
for flags not given there, the same environment variables the services read: the exporter's
``--metrics-port``/``METRICS_PORT`` (9520 by default), ingest's ``--status-port``/``INGEST_STATUS_PORT``, a
worker's ``--status-port``/``STATUS_PORT``. A service without a status port has nothing to probe: the check
fails and says so, rather than probing a port nothing listens on.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

#: subcommand -> (flag on its command line, environment variable, default); kept in step with the services'
#: flag declarations by tests/test_deployment.py, which compares against the real CLI parser.
PORT_SOURCES: dict[str, tuple[str, str, int]] = {
    "exporter": ("--metrics-port", "METRICS_PORT", 9520),
    "up": ("--metrics-port", "METRICS_PORT", 9520),
    "ingest": ("--status-port", "INGEST_STATUS_PORT", 0),
    "modeling": ("--status-port", "STATUS_PORT", 0),
    "cost": ("--status-port", "STATUS_PORT", 0),
    "qoe": ("--status-port", "STATUS_PORT", 0),
}


def served_port(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """The status port of the process started as ``argv`` in environment ``env`` (0: none)."""
    command = next((arg for arg in argv if arg in PORT_SOURCES), None)
    if command is None:
        return 0
    flag, variable, default = PORT_SOURCES[command]
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(flag, type=int, default=None)
    given = getattr(parser.parse_known_args(list(argv))[0], flag.lstrip("-").replace("-", "_"))
    if given is not None:
        return int(given)
    # An empty variable counts as unset, as in the services' own flag handling.
    return int(env[variable]) if env.get(variable) else default


def default_url(env: Mapping[str, str], cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    if env.get("HEALTHCHECK_URL"):
        return env["HEALTHCHECK_URL"]
    try:
        argv = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    port = served_port(argv, env)
    return f"http://127.0.0.1:{port}/ready" if port else None


def probe(url: str, timeout: float) -> int:
    if not url.startswith(("http://", "https://")):
        print(f"te-healthcheck: not an http(s) URL: {url}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"te-healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="te-healthcheck", description="exit 0 when URL answers 200")
    parser.add_argument("url", nargs="?", help="URL to probe (default: see the module docstring)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    url = args.url or default_url(os.environ)
    if url is None:
        print(
            "te-healthcheck: this service serves no status port; set STATUS_PORT (workers), "
            "INGEST_STATUS_PORT (ingest) or HEALTHCHECK_URL",
            file=sys.stderr,
        )
        return 1
    return probe(url, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
