"""`python -m conveyor.worker`: the SQS worker process."""

from __future__ import annotations

import sys

from conveyor.process import Run, serve
from conveyor.settings import WorkerSettings
from conveyor.wiring import Deps
from conveyor.worker.runner import Worker


def build(settings: WorkerSettings, deps: Deps) -> Run:
    return Worker(settings, deps.store, deps.queue, settings.task_types()).run


if __name__ == "__main__":
    sys.exit(serve(WorkerSettings, "conveyor-worker", build))
