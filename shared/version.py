"""The project's version: one value, the installed package's metadata (``version`` in pyproject.toml)."""

from __future__ import annotations

import functools
from importlib import metadata


@functools.cache
def version() -> str:
    """What every service announces (nats.micro needs semver) and ``status`` prints."""
    try:
        return metadata.version("transcode-energy")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0+unknown"
