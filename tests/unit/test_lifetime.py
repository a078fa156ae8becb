"""Children started through conveyor_dev.local.lifetime live as long as the process that
started them, whichever of its threads started them, and die with it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from conveyor_dev.local.lifetime import popen_with_parent


def test_a_child_started_from_a_thread_that_exits_lives_on():
    """PR_SET_PDEATHSIG fires when the forking *thread* ends: before the spawner thread, a
    child started from a thread that then exited was SIGKILLed (-9) at once."""
    started: list[subprocess.Popen[bytes]] = []

    def start_then_exit() -> None:
        started.append(popen_with_parent([sys.executable, "-c", "import time; time.sleep(30)"]))
        # The thread outlives the guard's prctl (a few ms), so that its exit is what counts.
        time.sleep(1.0)

    thread = threading.Thread(target=start_then_exit)
    thread.start()
    thread.join()
    (child,) = started
    try:
        # The signal, when it comes, comes as the thread exits: well within this second.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert child.poll() is None, f"the child died with {child.returncode}"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
