"""The supervisor's recent log records, kept in memory for GET /api/v1/logs."""

from __future__ import annotations

import collections
import logging
import time

SERVER_RECORDS = 500


class LogRing(logging.Handler):
    def __init__(self, size: int = SERVER_RECORDS):
        super().__init__()
        self.records: collections.deque[dict] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            {
                "time": record.created,
                "level": record.levelname,
                "name": record.name,
                "message": record.getMessage(),
            }
        )


def asctime(created: float) -> str:
    """logging's default time format, as CamServer's logs show it."""
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        + f",{int(created % 1 * 1000):03d}"
    )


def camserver_entry(record: dict) -> list:
    """CamServer's log entry: [asctime, logger, level, message]."""
    return [asctime(record["time"]), record["name"], record["level"], record["message"]]


def text_line(entry: list) -> str:
    time_, name, level, message = entry
    return f"{time_} {level} {name}: {message}"
