"""Bulk snapshot of blue into Kafka: planner, task queue, workers, service."""
