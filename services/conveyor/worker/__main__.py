"""`python -m conveyor.worker`: the SQS worker process."""

from __future__ import annotations

import sys

from conveyor.process import Run, serve
from conveyor.settings import ConfigError, WorkerSettings
from conveyor.wiring import Deps
from conveyor.worker.handlers import load_handlers
from conveyor.worker.runner import Worker


def build(settings: WorkerSettings, deps: Deps) -> Run:
    try:
        handlers = load_handlers(settings.handlers)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"CONVEYOR_HANDLERS: {exc}") from exc
    return Worker(settings, deps.store, deps.queue, handlers).run


if __name__ == "__main__":
    sys.exit(serve(WorkerSettings, "conveyor-worker", build))
