"""JSON log lines for log shippers: ``twistd --logger rserpool.logformat.json_observer``.

Each event becomes one line of JSON on standard output (journald, Docker and
most shippers take one object per line)::

    {"time": "2026-01-02T03:04:05.678901Z", "level": "info",
     "namespace": "rserpool.service.registrar",
     "message": "PE 00000001 registered in pool echo by pe1",
     "fields": {"pe_id": 1, "handle": "echo", "identity": "pe1"}}

Events below info, and Twisted's connection bookkeeping ("Starting
factory ..."), are left out as in the text log (``rserpool.logs``); twistd's
``--log-level`` does not reach a ``--logger`` observer.

``fields`` holds only the values the event's format string names: exactly
what the text line shows, never the other keys an event may carry.  A
failure adds ``"failure"`` with its traceback.  Bytes become text (invalid
UTF-8 escaped), other objects their ``str``.
"""

from __future__ import annotations

import json
import string
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from twisted.logger import FileLogObserver, ILogObserver, LogLevel, formatEvent

from rserpool.logs import quiet_observer

__all__ = ["event_as_json", "json_observer"]

_FORMATTER = string.Formatter()


def _field_names(log_format: str) -> list[str]:
    names = []
    try:
        for _, field, _, _ in _FORMATTER.parse(log_format):
            if field:
                name = field.split(".", 1)[0].split("[", 1)[0]
                if name and name not in names:
                    names.append(name)
    except ValueError:
        return []
    return names


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def event_as_json(event: dict[str, Any]) -> str:
    """One event as one line of JSON (with the trailing newline)."""
    when = event.get("log_time")
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": (datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                 if isinstance(when, (int, float)) else None),
        "level": getattr(level, "name", None) or "info",
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    log_format = event.get("log_format")
    if isinstance(log_format, str):
        fields = {name: _plain(event[name]) for name in _field_names(log_format) if name in event}
        if fields:
            record["fields"] = fields
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["failure"] = failure.getTraceback()
        except Exception:  # a failure that cannot even print itself
            record["failure"] = repr(failure)
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def json_observer(output: TextIO | None = None, level: LogLevel = LogLevel.info) -> ILogObserver:
    """The observer factory for ``twistd --logger``: JSON lines on ``output``
    (standard output by default) from ``level`` up, with Twisted's
    connection bookkeeping counted as debug (``rserpool.logs.quiet_observer``,
    as for the text lines)."""
    return quiet_observer(FileLogObserver(output if output is not None else sys.stdout, event_as_json), level)
