"""Waiting for a server the harness started (Prometheus, Alertmanager) to answer."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float
) -> None:
    """Return once `url` answers; raise, with the end of `log`, if `process` exits first
    (RuntimeError) or `timeout` seconds pass (TimeoutError)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode}:\n" + log.read_text()[-3000:]
            )
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout}s; see {log}") from None
            time.sleep(0.2)
