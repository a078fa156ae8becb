"""What a peer's no-op task does: append "<enqueued> <done> <pid>" (epoch seconds; the pid
shows which workers are up) to the file the bench reads ($PEER_DONE_FILE), in one short
O_APPEND write, so concurrent workers never interleave."""

import os
import time


def record(enqueued: float) -> None:
    fd = os.open(os.environ["PEER_DONE_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{enqueued} {time.time()} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
