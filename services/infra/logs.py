"""Logging helpers referenced from ``config.yaml``'s ``LOGGING`` block."""

from __future__ import annotations

import logging

from services.exceptions import ServiceError


class DeliberateErrorsWithoutTraceback(logging.Filter):
    """A worker that raises a :class:`ServiceError` (not found, validation, …)
    answered its caller as designed: log that one line, without a traceback.
    Anything else keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ServiceError):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg} [{exc.code}]"
        return True
