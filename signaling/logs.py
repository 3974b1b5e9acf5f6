"""Structured logging: text or one JSON object per line, with room and participant ids."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {0x5C: "\\\\"}
"""Control characters (and the backslash) as escapes: no field can forge a log line."""


def escape(value: object) -> str:
    return str(value).translate(_CONTROL)


class TextFormatter(logging.Formatter):
    """One line per record, whatever clients put in the fields (escaped, see ``escape``);
    tracebacks follow on their own lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        base = escape(super().formatMessage(record))
        extras = [
            f"{k}={escape(v)}" for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        ]
        return f"{base} {' '.join(extras)}" if extras else base


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger once, at start-up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
