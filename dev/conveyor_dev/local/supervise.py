"""`make local` keeps its components running as ECS keeps a service's desired count: a process
that exits is started again as it was started, says so, and is counted.

The local twin of the ECS mitigations in the runbooks: stopping a process (`kill PID`, the pid
is in `$CONVEYOR_LOCAL_RUN/pids/<name>`) replaces it, as `aws ecs stop-task` or
`--force-new-deployment` does; `supervisor.log` in the run's logs says when and why.
`--no-supervise` or CONVEYOR_LOCAL_SUPERVISE=0 turns this off (a drill that kills components
and wants them to stay dead).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

from conveyor_dev.local.system import LocalSystem, Proc

SUPERVISE_VARIABLE = "CONVEYOR_LOCAL_SUPERVISE"
CHECK_EVERY_SECONDS = 0.5


def supervision_enabled(environ: dict[str, str] | None = None) -> bool:
    import os

    return (environ if environ is not None else os.environ).get(SUPERVISE_VARIABLE, "1") != "0"


class Supervisor:
    """Watches `system`'s processes from a thread; restarts each one that exits."""

    def __init__(self, system: LocalSystem, say: Callable[[str], None]) -> None:
        self.system = system
        self.restarts: Counter[str] = Counter()
        self._say = say
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self.pid_dir = system.workdir / "pids"
        self._log = system.workdir / "logs" / "supervisor.log"

    def start(self) -> None:
        self.pid_dir.mkdir(exist_ok=True)
        self._log.touch()
        for proc in self.system.procs.values():
            self._record(proc)
        self._thread.start()

    def stop(self) -> None:
        """Stop restarting (before the system is stopped, so its exits are not 'deaths')."""
        self._stopping.set()
        self._thread.join()

    def _record(self, proc: Proc) -> None:
        (self.pid_dir / proc.name).write_text(f"{proc.popen.pid}\n")

    def _watch(self) -> None:
        while not self._stopping.wait(CHECK_EVERY_SECONDS):
            for name, proc in list(self.system.procs.items()):
                code = proc.popen.poll()
                if code is None or self._stopping.is_set():
                    continue
                fresh = self.system.respawn(name)
                self.restarts[name] += 1
                self._record(fresh)
                self._report(
                    f"{name} (pid {proc.popen.pid}) exited with {code}; started again as pid"
                    f" {fresh.popen.pid} (restart {self.restarts[name]})"
                )

    def _report(self, message: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}"
        with open(self._log, "a") as log:
            log.write(stamped + "\n")
        self._say(message)
