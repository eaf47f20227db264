"""A batch: what one green transaction applies and one offset commit confirms."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from schemas.control import Fence


@dataclass
class PartitionProgress:
    """What a batch moves forward on one partition."""

    next_offset: int
    src_lsn: int = 0  # newest CDC commit LSN applied
    src_ts_ms: int = 0  # newest source commit time applied (heartbeats included)
    fence: Fence | None = None


@dataclass
class Rejected:
    message: Message
    step: str
    error: BaseException


@dataclass
class Batch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    row_owner: list[int] = field(default_factory=list)  # index into messages, per row
    messages: list[Message] = field(default_factory=list)  # messages that produced rows
    progress: dict[int, PartitionProgress] = field(default_factory=dict)
    # Per partition, the offset green must hold for this batch to apply (set at dispatch).
    expected: dict[int, int] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    applied_ops: dict[str, int] = field(default_factory=dict)
    cdc_commit_ms: list[int] = field(default_factory=list)  # for end-to-end latency
    size: int = 0  # messages in the batch, whatever became of them
    started: float = field(default_factory=time.monotonic)
    committed_ms: int = 0  # when green committed it (ms since the epoch)

    def advance(self, partition: int, offset: int) -> PartitionProgress:
        progress = self.progress.get(partition)
        if progress is None:
            progress = self.progress[partition] = PartitionProgress(offset + 1)
        else:
            progress.next_offset = offset + 1
        self.size += 1
        return progress

    def add_rows(self, message: Message, rows: list[tuple[Any, ...]], op: str) -> None:
        owner = len(self.messages)
        self.messages.append(message)
        self.rows.extend(rows)
        self.row_owner.extend([owner] * len(rows))
        self.applied_ops[op] = self.applied_ops.get(op, 0) + 1

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget what came from these partitions (revoked or lost before it was applied)."""
        keep = [i for i, m in enumerate(self.messages) if m.partition() not in partitions]
        index = {old: new for new, old in enumerate(keep)}
        rows, owners = [], []
        for row, owner in zip(self.rows, self.row_owner, strict=True):
            if owner in index:
                rows.append(row)
                owners.append(index[owner])
        self.rows, self.row_owner = rows, owners
        self.messages = [self.messages[i] for i in keep]
        self.rejected = [r for r in self.rejected if r.message.partition() not in partitions]
        for partition in partitions:
            self.progress.pop(partition, None)
            self.expected.pop(partition, None)

    @property
    def empty(self) -> bool:
        return not self.progress
