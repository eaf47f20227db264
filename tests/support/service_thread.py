"""A long-lived service (CDC, consumer) run in a thread of the test process."""

from __future__ import annotations

import threading
from typing import Protocol


class _Service(Protocol):
    def run(self) -> None: ...

    def request_stop(self) -> None: ...


class ServiceThread:
    """Runs `service.run()` in a daemon thread and keeps what it raised for the test."""

    def __init__(self, service: _Service, name: str) -> None:
        self._service = service
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._service.run()
        except BaseException as exc:
            self.failure = exc

    def check(self) -> None:
        """Raise what the service raised, if it did."""
        if self.failure is not None:
            raise self.failure

    def stop(self, timeout_s: float = 60) -> None:
        self._service.request_stop()
        self._thread.join(timeout_s)
