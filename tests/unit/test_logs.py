"""The services' JSON log lines, as a real process writes them to stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

# 2026-12-05T07:58:05.956Z: RFC 3339, UTC written as Z, exactly three fraction digits.
RFC3339_UTC_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
FIXED_CREATED = 1796457485.956789  # a record's creation time, seconds since the epoch

# Logs one event now and one with a fixed creation time, the way a service does.
_PROGRAM = f"""
import logging
from conveyor.telemetry.logs import configure_logging
configure_logging("conveyor-test")
logging.getLogger("conveyor.test").info("now")
logging.getLogger().handle(logging.makeLogRecord(
    {{"name": "conveyor.test", "levelname": "INFO", "levelno": 20, "msg": "fixed",
      "created": {FIXED_CREATED!r}}}
))
"""


def _log_lines(tz: str) -> tuple[list[dict[str, str]], datetime, datetime]:
    before = datetime.now(UTC)
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        env={**os.environ, "TZ": tz},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    after = datetime.now(UTC)
    return [json.loads(line) for line in done.stderr.splitlines()], before, after


def test_time_is_rfc3339_utc_with_milliseconds_whatever_the_local_zone():
    # A zone 5 h 45 min off UTC: local time written as if it were UTC cannot pass.
    (now, fixed), before, after = _log_lines("Asia/Kathmandu")
    assert (now["message"], fixed["message"]) == ("now", "fixed")
    for line in (now, fixed):
        assert RFC3339_UTC_MS.match(line["time"]), line["time"]
    logged = datetime.fromisoformat(now["time"])
    assert before - timedelta(milliseconds=1) <= logged <= after
    assert fixed["time"] == (
        datetime.fromtimestamp(FIXED_CREATED, UTC).strftime("%Y-%m-%dT%H:%M:%S.956Z")
    )
