"""Command-line flags with environment-variable equivalents, and logging set-up.

Every flag of every service is declared through :func:`flag`, so ``--help`` always shows the env var and the
default, and a malformed environment value stops the program with one clear line instead of a traceback
(the old results exporter crashed on ``int(os.getenv(...))``: B-R19).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class ConfigError(SystemExit):
    """A configuration value is unusable; carries the message printed on exit."""

    def __init__(self, message: str) -> None:
        super().__init__(f"configuration error: {message}")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    name: str,
    *,
    env: str,
    default: Any,
    help: str,
    type: Callable[[str], Any] = str,
    secret: bool = False,
    metavar: str | None = None,
) -> None:
    """Add ``name`` (e.g. ``--nats-url``) whose default comes from ``env`` when that variable is set."""
    raw = os.environ.get(env)
    value = default
    if raw is not None and raw != "":
        try:
            value = _parse_bool(raw) if type is bool else type(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"environment variable {env}: {exc}") from None
    shown = "(not set)" if default in (None, "") else ("(hidden)" if secret else repr(default))
    text = f"{help} [env {env}; default {shown}]"
    if type is bool:
        action = parser.add_argument(name, default=value, help=text, action=argparse.BooleanOptionalAction)
    else:
        action = parser.add_argument(name, default=value, type=type, help=text, metavar=metavar)
    # Remembered so that `up` can hand a value to a service through the same variable (never argv).
    action.env_var = env  # type: ignore[attr-defined]
    action.secret = secret  # type: ignore[attr-defined]


def env_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Environment variable -> destination of every flag declared with :func:`flag` on ``parser``."""
    return {
        getattr(action, "env_var"): action.dest  # noqa: B009
        for action in parser._actions
        if getattr(action, "env_var", None)
    }


def env_text(value: object) -> str:
    """A parsed flag value written back as its environment-variable text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_flags(
    add_arguments: Callable[[argparse.ArgumentParser], None], argv: list[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv`` (default: none, so every default and env var applies) with the flags ``add_arguments``
    declares: the one way settings are built from flags, in services and tests alike."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return parser.parse_args(argv or [])


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be 0..65535, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"expected a number >= 0, got {text!r}")
    return value


def byte_size(text: str) -> int:
    """``16MiB``, ``500k``, ``1048576`` -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]i?b?|b)?\s*", text.lower())
    if not match:
        raise ValueError(f"expected a size like 16MiB or 1048576, got {text!r}")
    number, unit = int(match.group(1)), (match.group(2) or "b")
    scale = {"b": 1, "k": 1000, "m": 1000**2, "g": 1000**3}[unit[0]]
    if "i" in unit:
        scale = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit[0]]
    return number * scale


def redact_url(url: str) -> str:
    """Drop any password or token from a URL before it is logged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    flag(
        parser, "--log-level", env="LOG_LEVEL", default="INFO", help="Log level (DEBUG, INFO, WARNING, ERROR)"
    )


def setup_logging(level: str, service: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        force=True,
    )
    # nats-py logs reconnect chatter at INFO; ours is enough.
    logging.getLogger("nats").setLevel(max(logging.WARNING, logging.getLogger().level))
