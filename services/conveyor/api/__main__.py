"""`python -m conveyor.api`: the task API process."""

from __future__ import annotations

import logging
import sys

from conveyor import wiring
from conveyor.api.server import ApiServer
from conveyor.settings import ApiSettings, ConfigError, load
from conveyor.telemetry.serve import start_telemetry, stop_event_on_signals


def main() -> int:
    try:
        settings = load(ApiSettings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    stop = stop_event_on_signals()
    start_telemetry(settings, "conveyor-api")
    deps = wiring.build(settings)
    server = ApiServer(settings, deps.store, deps.queue)
    server.start()
    logging.getLogger("conveyor.api").info(
        "serving", extra={"port": server.port, "health_port": server.health_port}
    )
    stop.wait()
    server.stop(grace=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
