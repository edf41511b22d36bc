"""Structured logs: one JSON object per line, with the fields passed as ``extra``."""

from __future__ import annotations

import json
import logging

from codetether_server.logs import JsonFormatter


def test_a_record_becomes_one_json_line_with_its_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "codetether_server", "levelname": "INFO", "msg": "task %s", "args": ("done",)}
    )
    record.task_id = "t1"
    record.color_message = "\x1b[1mnoise\x1b[0m"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["msg"], entry["task_id"]) == (
        "info",
        "codetether_server",
        "task done",
        "t1",
    )
    assert "color_message" not in entry and entry["ts"].endswith("+00:00")


def test_exceptions_are_kept_in_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.makeLogRecord({"msg": "failed", "levelname": "ERROR", "exc_info": sys.exc_info()})
    entry = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in entry["exc"]
