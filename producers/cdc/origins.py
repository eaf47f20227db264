"""Which transactions a capture leaves out: those another bluegreen applier wrote.

An applier marks its transactions with a replication origin
(``pg_replication_origin_session_setup``); pgoutput then sends an Origin message right
after the transaction's Begin (PostgreSQL 15: only when the transaction has an origin
and the origin still exists; never for a non-transactional logical message). A capture
that sent such a transaction on would loop it back to where it came from, so every
change, truncate and transactional message of it is dropped. Begin and Commit still go
through — the publisher confirms the slot past the skipped transaction — and so do
Relation and Type messages, which describe tables for the transactions after it.
"""

from __future__ import annotations

from producers.cdc.pgoutput import Begin, Commit, LogicalMessage, Message, Origin


class OriginFilter:
    """Tracks the open transaction's origin; ``drops`` says whether a message goes."""

    __slots__ = ("_prefix", "skipped", "skipping")

    def __init__(self, prefix: str | None) -> None:
        self._prefix = prefix  # None: nothing is skipped
        self.skipping = False  # the open transaction carries a skipped origin
        self.skipped = 0  # transactions skipped so far

    def saw(self, message: Begin | Commit | Origin) -> None:
        """Begin and Commit end the previous decision; an Origin may start skipping."""
        if isinstance(message, Origin):
            prefix = self._prefix
            if prefix is not None and message.name.startswith(prefix) and not self.skipping:
                self.skipping = True
                self.skipped += 1
        else:
            self.skipping = False

    def drops(self, message: Message) -> bool:
        """True for a data message of a skipped transaction."""
        if not self.skipping:
            return False
        return not isinstance(message, LogicalMessage) or message.transactional
