"""`python -m conveyor.worker`: the SQS worker process."""

from __future__ import annotations

import sys

from conveyor import wiring
from conveyor.settings import ConfigError, WorkerSettings, load
from conveyor.telemetry.serve import start_telemetry, stop_event_on_signals
from conveyor.worker.handlers import load_handlers
from conveyor.worker.runner import Worker


def main() -> int:
    try:
        settings = load(WorkerSettings)
        handlers = load_handlers(settings.handlers)
    except (ConfigError, ValueError, ImportError) as exc:
        print(exc, file=sys.stderr)
        return 2
    stop = stop_event_on_signals()
    start_telemetry(settings, "conveyor-worker")
    deps = wiring.build(settings)
    Worker(settings, deps.store, deps.queue, handlers).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
