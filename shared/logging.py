"""structlog set-up: JSON lines for services, readable key=value output at a terminal."""

import logging
import os
import sys

import structlog


def configure_logging(json_output: bool | None = None, level: str | None = None) -> None:
    """Configure structlog once per process.

    JSON is used when `json_output` is true, when LINEGUARD_LOG_FORMAT=json, or when stderr is
    not a terminal; otherwise a console renderer. LINEGUARD_LOG_LEVEL sets the level.
    """
    if json_output is None:
        wanted = os.environ.get("LINEGUARD_LOG_FORMAT", "").lower()
        json_output = wanted == "json" or (wanted != "console" and not sys.stderr.isatty())
    level_name = (level or os.environ.get("LINEGUARD_LOG_LEVEL", "info")).upper()
    renderer = (structlog.processors.JSONRenderer() if json_output
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)),
        # resolved at each use, so a replaced sys.stderr (tests, daemons) is followed
        logger_factory=lambda *args: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
