"""The flows a manifest names, read from the code: each entrypoint imported, checked to
be a Prefect flow, its parameters validated against the signature, its parameter schema
(the UI's run form) computed. Every problem is reported at once; none means all loaded.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .manifest import ROOT, DeploymentSpec, ManifestError

if TYPE_CHECKING:
    from prefect import Flow


@dataclass(frozen=True)
class FlowInfo:
    """What a deployment needs to know of its flow (plain data)."""

    name: str
    description: str | None
    parameter_schema: dict[str, Any]


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    # Flow.validate_parameters logs each failure at ERROR before raising; we report it once.
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_flows(specs: list[DeploymentSpec], root: Path = ROOT) -> dict[str, "Flow[..., Any]"]:
    """Import every entrypoint and check its parameters; raise listing every problem.
    Returns the flow of each deployment, by deployment name."""
    from prefect import Flow
    from prefect.exceptions import ParameterTypeError, ScriptError, SignatureMismatchError
    from prefect.utilities.importtools import import_object

    flows: dict[str, Flow[..., Any]] = {}
    problems: list[str] = []
    for i, spec in enumerate(specs):
        label = f"deployments[{i}] ({spec.name}): entrypoint = {spec.entrypoint!r}"
        file = root / spec.path
        if not file.is_file():
            problems.append(f"{label}: file {spec.path} does not exist (paths are relative to the repository root)")
            continue
        try:
            obj = import_object(f"{file}:{spec.function}")
        except ScriptError as exc:
            problems.append(f"{label}: importing {spec.path} failed: "
                            f"{type(exc.user_exc).__name__}: {exc.user_exc}")
            continue
        except AttributeError:
            problems.append(f"{label}: {spec.path} has no function {spec.function!r}")
            continue
        if not isinstance(obj, Flow):
            problems.append(f"{label}: {spec.function!r} is not a Prefect flow (decorate it with @flow)")
            continue
        try:
            with _quiet("prefect.flows"):
                obj.validate_parameters(dict(spec.parameters))
        except (ParameterTypeError, SignatureMismatchError) as exc:
            detail = " ".join(str(exc).split())
            problems.append(f"deployments[{i}] ({spec.name}): parameters = {spec.parameters!r}: {detail}")
            continue
        flows[spec.name] = obj
    if problems:
        raise ManifestError("flows", problems)
    return flows


def describe(flow: "Flow[..., Any]") -> FlowInfo:
    """Name, docstring and parameter schema; the schema is computed as for the
    management deployments (deployments/management.py), so a re-read compares equal."""
    from prefect.utilities.callables import parameter_schema

    return FlowInfo(name=flow.name, description=flow.description,
                    parameter_schema=parameter_schema(flow.fn).model_dump_for_openapi())


def describe_all(flows: dict[str, "Flow[..., Any]"]) -> dict[str, FlowInfo]:
    return {name: describe(f) for name, f in flows.items()}
