"""The task lifecycle: how a task is stored and queued, and nothing else knows.

`codec` maps a Task to its DynamoDB items, its listing projection and its SQS snapshot.
(Kept import-free: conveyor.schema imports the codec, and the store imports schema.)
"""
