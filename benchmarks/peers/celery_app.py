"""Celery on kombu's SQS transport with its defaults (early acks), on $PEER_ENDPOINT (the bench's
metering proxy). The queue is predefined at the proxy's address: kombu's receives go to the
queue URL itself, which the emulator would otherwise give as its own address."""

import os
from urllib.parse import quote, urlsplit

from celery import Celery
from done_log import record

_endpoint = urlsplit(os.environ["PEER_ENDPOINT"])
_key = quote(os.environ["AWS_ACCESS_KEY_ID"], safe="")
_secret = quote(os.environ["AWS_SECRET_ACCESS_KEY"], safe="")
app = Celery("bench", broker=f"sqs://{_key}:{_secret}@{_endpoint.netloc}")
app.conf.update(
    broker_transport_options={
        "region": os.environ["AWS_DEFAULT_REGION"],
        "is_secure": False,
        "predefined_queues": {"celery": {"url": os.environ["PEER_QUEUE_URL"]}},
    },
    task_default_queue="celery",
    # SQS has no broadcast: remote control and events would need queues of their own.
    worker_enable_remote_control=False,
    worker_send_task_events=False,
)


@app.task
def noop(enqueued: float, payload: str) -> None:
    record(enqueued)


def send(enqueued: float, payload: str) -> None:
    noop.delay(enqueued, payload)
