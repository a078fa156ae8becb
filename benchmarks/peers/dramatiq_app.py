"""dramatiq + dramatiq_sqs with their defaults, on $PEER_ENDPOINT (the bench's metering proxy)."""

import os

import dramatiq
from done_log import record
from dramatiq_sqs import SQSBroker

broker = SQSBroker(
    namespace="bench",
    endpoint_url=os.environ["PEER_ENDPOINT"],
    region_name=os.environ["AWS_DEFAULT_REGION"],
)
dramatiq.set_broker(broker)


@dramatiq.actor
def noop(enqueued: float, payload: str) -> None:
    record(enqueued)


def send(enqueued: float, payload: str) -> None:
    noop.send(enqueued, payload)
