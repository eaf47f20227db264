"""The control layer: the migration's state in the control database, read and written
here only. Every SQL statement against a ``bluegreen.*`` table lives in this package;
callers open a connection to ``settings.control_dsn`` (and own its retries) and call
these functions with it.

Tables (``schema``):
    ``ensure_schema`` creates every control table in one transaction (and commits);
    ``drop_schema`` forgets the migration; ``migration_exists`` and
    ``task_queue_exists`` let read-only commands ask before reading.

Phase and audit (``migration``):
    ``Phase``, ``TRANSITIONS``, ``phase``, ``transition`` (moves and audits in one
    transaction, the phase row locked), ``audit``, ``audit_trail``, ``actor``,
    ``AuditEntry``, ``IllegalTransitionError``.

Read router (``read_router``):
    ``Router``, ``router``, ``router_position``, ``switch_reads`` (router, phase and
    audit in one transaction, NOTIFY on commit), ``listen_router``,
    ``parse_router_notice``, ``ROUTER_CHANNEL``.

Write ownership (``write_router``), on the same record:
    ``WriteRoute`` (color, epoch, paused, budget), ``WriteState``, ``write_state``,
    ``write_route`` (what a client polls), ``change_writes`` (one audited step of the
    write switch: pause, flip, resume, the phase with it; NOTIFY on commit),
    ``set_refresh_pending``, ``listen_writes``, ``parse_write_notice``,
    ``WRITES_CHANNEL``; the write clients' heartbeats: ``report_client``,
    ``forget_client``, ``lagging_clients`` (what a switch waits for), ``WriteClient``.

Shadowed reads (``shadow_reads``):
    ``ShadowCounts``, ``record_shadow_counts`` (a router adds its counts to its row
    of the current minute), ``shadow_window`` (every client's, last M minutes),
    ``ShadowWindow``.

Verification results (``verification``):
    ``record_verification``, ``last_verification``.

Snapshot tasks:
    the queue as a worker uses it (``tasks``): ``TaskQueue`` (claim with
    ``FOR UPDATE SKIP LOCKED``, heartbeat, complete, fail, release, interrupt),
    ``release_worker``, ``Task``, ``State``, ``Outcome``;
    filling it (``task_plan``): ``plan_ranges``, ``planned_tasks``, ``add_key_task``,
    ``retry_dead`` (the pure split into ranges is ``planner.ranges``);
    reading it (``task_report``): ``task_counts``, ``TaskCounts``, ``task_rows``,
    ``task_attempts``, ``produce_seconds``.

Dead-letter counts are not kept here: they are read from Kafka and green
(``consumers.dlq``).
"""

from bluegreen.control.migration import (
    TRANSITIONS,
    AuditEntry,
    IllegalTransitionError,
    Phase,
    actor,
    audit,
    audit_trail,
    phase,
    transition,
)
from bluegreen.control.read_router import (
    ROUTER_CHANNEL,
    Router,
    listen_router,
    parse_router_notice,
    router,
    router_position,
    switch_reads,
)
from bluegreen.control.schema import (
    drop_schema,
    ensure_schema,
    migration_exists,
    task_queue_exists,
)
from bluegreen.control.shadow_reads import (
    ShadowCounts,
    ShadowWindow,
    record_shadow_counts,
    shadow_window,
)
from bluegreen.control.task_plan import add_key_task, plan_ranges, planned_tasks, retry_dead
from bluegreen.control.task_report import (
    TaskCounts,
    produce_seconds,
    task_attempts,
    task_counts,
    task_rows,
)
from bluegreen.control.tasks import Outcome, State, Task, TaskQueue, release_worker
from bluegreen.control.verification import last_verification, record_verification
from bluegreen.control.write_router import (
    WRITES_CHANNEL,
    WriteClient,
    WriteRoute,
    WriteState,
    change_writes,
    forget_client,
    lagging_clients,
    listen_writes,
    parse_write_notice,
    report_client,
    set_refresh_pending,
    write_route,
    write_state,
)

__all__ = [
    "ROUTER_CHANNEL",
    "TRANSITIONS",
    "WRITES_CHANNEL",
    "AuditEntry",
    "IllegalTransitionError",
    "Outcome",
    "Phase",
    "Router",
    "ShadowCounts",
    "ShadowWindow",
    "State",
    "Task",
    "TaskCounts",
    "TaskQueue",
    "WriteClient",
    "WriteRoute",
    "WriteState",
    "actor",
    "add_key_task",
    "audit",
    "audit_trail",
    "change_writes",
    "drop_schema",
    "ensure_schema",
    "forget_client",
    "lagging_clients",
    "last_verification",
    "listen_router",
    "listen_writes",
    "migration_exists",
    "parse_router_notice",
    "parse_write_notice",
    "phase",
    "plan_ranges",
    "planned_tasks",
    "produce_seconds",
    "record_shadow_counts",
    "record_verification",
    "release_worker",
    "report_client",
    "retry_dead",
    "router",
    "router_position",
    "set_refresh_pending",
    "shadow_window",
    "switch_reads",
    "task_attempts",
    "task_counts",
    "task_queue_exists",
    "task_rows",
    "transition",
    "write_route",
    "write_state",
]
