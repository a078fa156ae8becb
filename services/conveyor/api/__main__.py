"""`python -m conveyor.api`: the task API process."""

from __future__ import annotations

import logging
import sys
import threading

from conveyor.api.server import ApiServer
from conveyor.process import Run, serve
from conveyor.settings import ApiSettings
from conveyor.wiring import Deps

SHUTDOWN_GRACE_SECONDS = 10


def build(settings: ApiSettings, deps: Deps) -> Run:
    # The API imports the task modules for their declarations only: it runs no handler.
    server = ApiServer(settings, deps.store, deps.queue, settings.task_types())

    def run(stop: threading.Event) -> None:
        server.start()
        logging.getLogger("conveyor.api").info(
            "serving", extra={"port": server.port, "health_port": server.health_port}
        )
        stop.wait()
        server.stop(grace=SHUTDOWN_GRACE_SECONDS)

    return run


if __name__ == "__main__":
    sys.exit(serve(ApiSettings, "conveyor-api", build))
