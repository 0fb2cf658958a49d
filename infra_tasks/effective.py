"""The configuration a run acts on: infra.toml, then the changes approved in the UI
(a versioned Prefect variable), then this run's --set overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import management
from . import overrides as persisted
from .config import NO_ALERTS_NOTE, InfraConfig, deep_merge, load_config


def effective_config(path: str | Path | None, env: str, cli: dict[str, Any] | None = None,
                     use_prefect: bool = True) -> tuple[InfraConfig, list[str]]:
    base = load_config(path, cli)
    base.env(env)
    if not use_prefect:
        return base, []
    version, approved = persisted.read(base.prefix, env)
    if not approved:
        return base, prefect_notes(base, env)
    cfg = load_config(path, deep_merge(approved, cli or {}))
    shown = ", ".join(f"{k}={v!r}" for k, v in sorted(persisted.flatten(approved).items()))
    note = (f"changes approved in the UI are in effect (Prefect variable "
            f"{persisted.variable_name(base.prefix, env)!r}, version {version}): {shown}")
    return cfg, [note, *prefect_notes(cfg, env)]


def prefect_notes(cfg: InfraConfig, env: str) -> list[str]:
    """Plan notes about the Prefect side: no alerts configured, deployments left under old names."""
    return [*alerts_notes(cfg), *management.retired_notes(cfg.prefix, env)]


def alerts_notes(cfg: InfraConfig) -> list[str]:
    """Without a notification block no automation is registered: the plan says so."""
    return [] if cfg.prefect.alerts_block else [NO_ALERTS_NOTE]
