"""The SQS worker: claims tasks with a lease, heartbeats, runs pluggable handlers."""
