"""Control messages: what travels in the change stream besides rows.

The CDC producer writes fences and heartbeats into blue's WAL as logical decoding
messages under these prefixes (pg_logical_emit_message), and forwards a TRUNCATE of
blue as an event; the consumer reads them as positions, not rows. Both sides take
the prefixes from here, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.envelope import Op, Version

# Every logical decoding message bluegreen itself writes starts with this prefix; the
# capture forwards only those (another application's messages are not ours to carry).
MESSAGE_PREFIX = "bluegreen."
FENCE_PREFIX = MESSAGE_PREFIX + "fence"
HEARTBEAT_PREFIX = MESSAGE_PREFIX + "heartbeat"

# Replication origins (pg_replication_origin_session_setup) mark the transactions an
# applier writes, and each capture skips transactions carrying the other direction's
# origin (pgoutput sends an Origin message after Begin), so nothing loops:
# - the forward applier's transactions on green carry FORWARD_ORIGIN; green's reverse
#   capture does not send them back to blue;
# - the reverse applier's transactions on blue carry REVERSE_ORIGIN; blue's forward
#   capture does not send them to green again.
FORWARD_ORIGIN = "bluegreen_forward"
REVERSE_ORIGIN = "bluegreen_reverse"


@dataclass(frozen=True, slots=True)
class Fence:
    fence_id: str
    lsn: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    ts_ms: int


@dataclass(frozen=True, slots=True)
class Truncate:
    version: Version


Control = Fence | Heartbeat | Truncate


def control_of(event: dict[str, Any]) -> Control | None:
    """Fences, heartbeats and truncates; None for row changes and foreign messages."""
    op = event["op"]
    if op == Op.TRUNCATE:
        source = event["source"]
        return Truncate(Version(source["lsn"], source["seq"]))
    if op == Op.MESSAGE and event["message"] is not None:
        message = event["message"]
        if message["prefix"] == FENCE_PREFIX:
            return Fence(message["content"], event["source"]["lsn"])
        if message["prefix"] == HEARTBEAT_PREFIX:
            return Heartbeat(event["source"]["ts_ms"])
    return None
