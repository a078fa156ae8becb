"""A peer's producer: `producer.py dramatiq|celery CLIENTS`. Prints "ready", then for each line
N on stdin sends N no-op tasks from CLIENTS threads (each stamped with its enqueue time) and
prints "sent"; a long-lived process, so its start-up is not counted as per-task CPU."""

import importlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor

PAYLOAD = "x" * 1024  # the bench's 1 KB task


def main() -> None:
    app = importlib.import_module(f"{sys.argv[1]}_app")
    clients = int(sys.argv[2])
    print("ready", flush=True)
    with ThreadPoolExecutor(clients) as pool:
        for line in sys.stdin:
            list(pool.map(lambda _: app.send(time.time(), PAYLOAD), range(int(line))))
            print("sent", flush=True)


if __name__ == "__main__":
    main()
