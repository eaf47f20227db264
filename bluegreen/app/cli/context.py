"""What every command receives: the config file path, and settings built on first use
(so `--help` works even when the environment holds a bad setting)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from bluegreen.core import logs
from bluegreen.core.config import Settings, load_settings
from schemas.domain import Domain, load_domain

_DEBUG = {"on": False}


def enable_debug() -> None:
    _DEBUG["on"] = True


def debug_enabled() -> bool:
    """--debug was given: errors show their traceback instead of one line."""
    return _DEBUG["on"]


@dataclass
class CliContext:
    config_file: Path | None
    log_format: str | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            overrides = {"log": {"format": self.log_format}} if self.log_format else None
            self._settings = load_settings(self.config_file, overrides)
            logs.configure(self._settings.log)
        return self._settings

    @property
    def domain(self) -> Domain:
        """The domain the settings name (the demo catalog unless BLUEGREEN_DOMAIN says)."""
        return load_domain(self.settings.domain)


def cli_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliContext):  # pragma: no cover - set by the root callback
        raise RuntimeError("the root callback did not run")
    return obj
