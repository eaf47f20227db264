"""How the capture fails: for good (``CdcError``) or until the stream restarts
(``KafkaDeliveryError``)."""

from __future__ import annotations

from bluegreen.core.errors import BluegreenError


class CdcError(BluegreenError):
    """The capture cannot go on without losing data; it stops before confirming more."""


class KafkaDeliveryError(BluegreenError):
    """The broker did not take every message: the stream restarts from the slot.

    `fatal`: the idempotent producer cannot go on; a new one must be created.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class SlotGoneError(CdcError):
    """The replication slot does not exist (any more).

    Blue's capture stops on it; green's reverse capture goes back to waiting for the
    slot (it is dropped at a writes rollback)."""
