"""Text logs stay one line per record whatever clients put in the fields."""

from __future__ import annotations

import logging

from signaling.logs import TextFormatter


def test_client_text_cannot_forge_a_log_line() -> None:
    record = logging.LogRecord("parley.stage", logging.INFO, __file__, 1, "stage %s",
                               ("request",), None)
    record.text = "hi\n2026-01-01 00:00:00 INFO parley.stage: stage promoted by=admin\r\x1b[2J"
    line = TextFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "text=hi\\x0a2026" in line
