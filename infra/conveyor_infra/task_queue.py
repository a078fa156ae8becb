"""A lane's task queue: an SQS FIFO queue with a FIFO dead-letter queue behind it. The program
declares one per priority lane (conveyor.domain.LANES), all with the same policies; the default
lane's keeps the names from before lanes (`lane_suffix`), so existing stacks keep their queues."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from conveyor.domain import DEFAULT_LANE, MAX_RECEIVE_COUNT, lane_suffix

# The worker itself dead-letters a task after max attempts (state DEAD + DLQ message). SQS's
# redrive fires only if that path failed (a worker crashed mid-attempt again and again), so it
# sits a few receives above the most attempts any task may ask for (MAX_RECEIVE_COUNT, not the
# stack's default) instead of competing with the worker; the worker knows the count too, and
# replaces a message it returns without using an attempt before it runs out of receives.
LONG_POLL_SECONDS = 20


@dataclass(frozen=True)
class TaskQueueArgs:
    name_prefix: str
    # The worker's CONVEYOR_VISIBILITY_TIMEOUT_SECONDS: the stack passes both from one knob
    # (conveyor.runtime), whose rules make a heartbeat land well before it runs out.
    visibility_timeout_seconds: int
    message_retention_seconds: int
    dlq_retention_seconds: int
    # DeduplicationScope=messageGroup + FifoThroughputLimit=perMessageGroupId: throughput scales
    # with message groups. Dedup then holds per group, so a task's group id must be stable.
    high_throughput: bool
    lane: str = DEFAULT_LANE


def task_queue_name(lane: str) -> str:
    """The Pulumi name of `lane`'s TaskQueue (its queue and DLQ: `<name>-queue`, `<name>-dlq`)."""
    return f"tasks{lane_suffix(lane, '-')}"


class TaskQueue(pulumi.ComponentResource):
    """FIFO queue + FIFO DLQ with SSE, long polling and a redrive safety net.

    ContentBasedDeduplication is off because the API sets MessageDeduplicationId = task id:
    the relay's re-send of the same task must be dropped even though its body may differ.
    """

    queue: aws.sqs.Queue
    dlq: aws.sqs.Queue

    def __init__(
        self, name: str, args: TaskQueueArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("conveyor:messaging:TaskQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.dlq = aws.sqs.Queue(
            f"{name}-dlq",
            name=f"{args.name_prefix}-tasks{lane_suffix(args.lane, '-')}-dlq.fifo",
            fifo_queue=True,
            content_based_deduplication=False,
            deduplication_scope="queue",
            fifo_throughput_limit="perQueue",
            sqs_managed_sse_enabled=True,
            visibility_timeout_seconds=args.visibility_timeout_seconds,
            receive_wait_time_seconds=LONG_POLL_SECONDS,
            message_retention_seconds=args.dlq_retention_seconds,
            opts=child,
        )
        self.queue = aws.sqs.Queue(
            f"{name}-queue",
            name=f"{args.name_prefix}-tasks{lane_suffix(args.lane, '-')}.fifo",
            fifo_queue=True,
            content_based_deduplication=False,
            deduplication_scope="messageGroup" if args.high_throughput else "queue",
            fifo_throughput_limit="perMessageGroupId" if args.high_throughput else "perQueue",
            sqs_managed_sse_enabled=True,
            visibility_timeout_seconds=args.visibility_timeout_seconds,
            receive_wait_time_seconds=LONG_POLL_SECONDS,
            message_retention_seconds=args.message_retention_seconds,
            redrive_policy=pulumi.Output.json_dumps(
                {"deadLetterTargetArn": self.dlq.arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
            ),
            opts=child,
        )
        self.register_outputs(
            {
                "queue_url": self.queue.url,
                "queue_arn": self.queue.arn,
                "dlq_url": self.dlq.url,
                "dlq_arn": self.dlq.arn,
            }
        )
