"""The supervisor's recent log records, kept in memory for GET /api/v1/logs."""

from __future__ import annotations

import collections
import logging

SERVER_RECORDS = 500


class LogRing(logging.Handler):
    def __init__(self, size: int = SERVER_RECORDS):
        super().__init__()
        self.records: collections.deque[dict] = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            {
                "time": record.created,
                "level": record.levelname,
                "name": record.name,
                "message": record.getMessage(),
                "text": self.format(record),
            }
        )
