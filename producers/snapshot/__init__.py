"""Bulk snapshot of blue into Kafka, in resumable tasks any number of workers share.

``service`` plans (slot, topic, tasks in ``bluegreen.control``) and starts worker
processes that ``supervisor`` watches; a ``worker`` claims tasks, ``publish`` reads a
task's rows at the worker's exported snapshot (``reader``) and sends them,
``outcomes`` records each task only once the broker acknowledged it; ``heartbeat``
keeps claims alive and ``deps`` rides through dependency restarts.
"""
