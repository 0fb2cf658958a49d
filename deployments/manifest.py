"""The flow manifest: the `deployments:` list of the repository's `prefect.yaml`, in
Prefect's own format, validated before anything else happens (pure: no Prefect API).

A deployment takes Prefect's keys `name`, `entrypoint`, `description`, `parameters`,
`tags`, `schedules` (cron ones: `cron`, `timezone`) and `work_pool.job_variables`
(`cpu`, `memory`, `env`), plus one extension of this repository, `x-deployment-types`.
What the deployer decides is refused with the reason: the branch picks the work pool
(`work_pool.name`), the commit picks the image and the version, the image holds the
code (no `build`/`push`/`pull`). Every problem names the deployment and the key, and
all of them are reported at once.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from infra_tasks.config import fargate_pair_error

ROOT = Path(__file__).resolve().parent.parent
# At the repository root, where Prefect expects it: entrypoints are relative to it.
DEFAULT_MANIFEST = ROOT / "prefect.yaml"

# Top-level directories with flow code that the agent image contains (Dockerfile COPY).
FLOW_CODE_DIRS = ("flows",)
DEPLOYMENT_TYPES = ("dev", "staging", "main")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DeployError(Exception):
    """Nothing (more) was deployed; the message says why and what to do."""


class ManifestError(DeployError):
    """The manifest or the flows it names are invalid; lists every problem found."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s); nothing was deployed:\n  "
                         + "\n  ".join(problems))


# --- the model ------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CronSpec(_Strict):
    """One entry of `schedules`: Prefect's cron schedule."""

    cron: str
    timezone: str = "UTC"


class JobVariables(_Strict):
    cpu: int | None = None
    memory: int | None = None
    # Merged by Prefect over the work pool's `env` (result storage settings and the like).
    env: dict[str, str] = {}


class WorkPoolSpec(_Strict):
    job_variables: JobVariables = JobVariables()


class DeploymentSpec(_Strict):
    """One entry of `deployments:`."""

    name: str
    entrypoint: str
    description: str | None = None
    parameters: dict[str, Any] = {}
    tags: list[str] = []
    schedules: list[CronSpec] = []
    work_pool: WorkPoolSpec = WorkPoolSpec()
    # This repository's extension (not a Prefect key): the deployment types that get
    # this deployment; default all.
    deployment_types: list[Literal["dev", "staging", "main"]] | None = Field(None, alias="x-deployment-types")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-63 of letters, digits, '-', '_', '.' and start with a letter or digit")
        return v

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, v: str) -> str:
        err = entrypoint_error(v)
        if err:
            raise ValueError(err)
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        if any(not t.strip() for t in v):
            raise ValueError("tags must be non-empty strings")
        if len(set(v)) != len(v):
            raise ValueError("tags must be unique")
        return v

    @field_validator("deployment_types")
    @classmethod
    def _types(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("must list each of dev, staging, main at most once, and at least one")
        return v

    @property
    def path(self) -> str:
        return self.entrypoint.rsplit(":", 1)[0]

    @property
    def function(self) -> str:
        return self.entrypoint.rsplit(":", 1)[1]

    @property
    def cpu(self) -> int | None:
        return self.work_pool.job_variables.cpu

    @property
    def memory(self) -> int | None:
        return self.work_pool.job_variables.memory

    def applies_to(self, t: str) -> bool:
        return self.deployment_types is None or t in self.deployment_types


SUPPORTED = {
    "deployment": [f.alias or n for n, f in DeploymentSpec.model_fields.items()],
    "work_pool": list(WorkPoolSpec.model_fields),
    "job_variables": list(JobVariables.model_fields),
    "schedule": list(CronSpec.model_fields),
}
TOP_LEVEL = ("deployments", "name", "prefect-version", "definitions")

_PULL = ("the agent image already holds the code, and the deployer sets each deployment's pull step "
         "(set_working_directory to the image's working directory)")
# Keys Prefect's prefect.yaml allows that this deployer decides itself: why, per key path
# ("[]" stands for a list index).
DECIDED = {
    "work_pool.name": "the branch being deployed picks the work pool (<prefix>-<deployment type>: dev-v2 -> dev, "
                      "staging-v2 -> staging, main-v2 -> main)",
    "work_pool.work_queue_name": "flow runs go to the work pool's default queue, which the agent serves",
    "work_pool.job_variables.image": "the image is the agent image of the commit being deployed (--image-tag)",
    "version": "the deployer sets the version to the image tag being deployed",
    "enforce_parameter_schema": "always true: parameters are checked against the flow's signature",
    "schedule": "use `schedules:` (a list of {cron, timezone})",
    "build": _PULL, "push": _PULL, "pull": _PULL,
}
OTHER_PREFECT_KEYS = {"version_type", "paused", "concurrency_limit", "flow_name", "triggers", "sla"}
OTHER_SCHEDULE_KEYS = {"interval", "rrule", "anchor_date", "day_or", "active", "parameters", "slug", "replaces"}


# --- rules across keys -----------------------------------------------------------------

def entrypoint_error(entrypoint: str) -> str | None:
    if entrypoint.count(":") != 1:
        return "must be 'path/to/file.py:function', e.g. 'flows/example.py:hello'"
    path, func = entrypoint.split(":")
    p = PurePosixPath(path)
    if p.is_absolute() or "\\" in path or ".." in p.parts or p.suffix != ".py" or not p.parts:
        return f"path {path!r} must be a relative path to a .py file, inside the repository"
    if p.parts[0] not in FLOW_CODE_DIRS or len(p.parts) < 2:
        return (f"path {path!r} must be under {' or '.join(d + '/' for d in FLOW_CODE_DIRS)}: only those "
                f"directories are copied into the agent image the flows run in")
    if not IDENT_RE.match(func):
        return f"function {func!r} is not a Python identifier"
    return None


def cron_error(cron: str, timezone: str) -> str | None:
    """Validated by Prefect's own schedule model, so the server cannot reject it later."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        return "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
    return None


def _spec_problems(spec: DeploymentSpec, label: str) -> list[str]:
    """Rules across keys, once each key is well-formed."""
    problems = []
    cpu, memory = spec.cpu, spec.memory
    key = "work_pool.job_variables"
    if (cpu is None) != (memory is None):
        problems.append(f"{label}: {key}: cpu = {cpu!r}, memory = {memory!r}: give both or neither "
                        f"(neither = the work pool's default from infra.toml [flows])")
    elif cpu is not None and memory is not None:
        err = fargate_pair_error(cpu, memory)
        if err:
            problems.append(f"{label}: {key}: cpu = {cpu}, memory = {memory}: {err}")
    seen: dict[tuple[str, str], int] = {}
    for i, s in enumerate(spec.schedules):
        err = cron_error(s.cron, s.timezone)
        if err:
            problems.append(f"{label}: schedules[{i}].cron = {s.cron!r} (timezone {s.timezone!r}): {err}")
        if (s.cron, s.timezone) in seen:
            problems.append(f"{label}: schedules[{i}] repeats schedules[{seen[(s.cron, s.timezone)]}]")
        seen.setdefault((s.cron, s.timezone), i)
    return problems


# --- parsing ---------------------------------------------------------------------------

def parse_manifest(raw: dict[str, Any] | None, source: str = "prefect.yaml") -> list[DeploymentSpec]:
    """Validate the whole manifest; raise ManifestError listing every problem."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ManifestError(source, ["the file must be a mapping with a `deployments:` list"])
    problems: list[str] = []
    for key in raw:
        if key in DECIDED:
            problems.append(f"{key}: not accepted here: {DECIDED[key]}; remove it")
        elif key not in TOP_LEVEL:
            problems.append(f"{key}: unknown top-level key; allowed: {', '.join(TOP_LEVEL)}")
    entries = raw.get("deployments") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ManifestError(source, problems + ["deployments: must be a list of mappings (`- name: ...`)"])
    specs: list[DeploymentSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        label = f"deployments[{i}]" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
        try:
            spec = DeploymentSpec.model_validate(entry)
        except ValidationError as exc:
            problems.extend(_format_error(e, entry, label) for e in exc.errors() if not _other_schedule(e, entry))
            continue
        problems.extend(_spec_problems(spec, label))
        if spec.name in seen:
            problems.append(f"{label}: name {spec.name!r} is already used by deployments[{seen[spec.name]}]")
        seen.setdefault(spec.name, i)
        specs.append(spec)
    if problems:
        raise ManifestError(source, problems)
    return specs


def _other_schedule(err: dict[str, Any], entry: dict[str, Any]) -> bool:
    """A missing cron of an interval or rrule schedule: that schedule's own error says it all."""
    loc = tuple(err.get("loc", ()))
    if err.get("type") != "missing" or len(loc) != 3 or loc[0] != "schedules" or loc[2] != "cron":
        return False
    schedule = _value_at(entry, loc[:2])
    return isinstance(schedule, dict) and bool({"interval", "rrule"} & set(schedule))


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(entry)"


def _unknown_key(loc: tuple[Any, ...]) -> str:
    shape = ".".join("[]" if isinstance(p, int) else str(p) for p in loc).replace(".[]", "[]")
    last = str(loc[-1])
    if shape in DECIDED:
        return f"not accepted here: {DECIDED[shape]}; remove it"
    if len(loc) == 1:
        what = "a prefect.yaml key this deployer does not support" if last in OTHER_PREFECT_KEYS else "unknown key"
        return f"{what}; allowed: {', '.join(SUPPORTED['deployment'])}"
    if shape.startswith("schedules[]"):
        what = "not supported" if last in OTHER_SCHEDULE_KEYS else "unknown key"
        return f"{what} (only cron schedules are); allowed: {', '.join(SUPPORTED['schedule'])}"
    if shape.startswith("work_pool.job_variables."):
        return (f"not settable here: the work pool's defaults (set by bootstrap from infra.toml) apply; "
                f"allowed: {', '.join(SUPPORTED['job_variables'])}")
    return f"unknown key; allowed: {', '.join(SUPPORTED['work_pool'])}"


def _value_at(entry: Any, loc: tuple[Any, ...]) -> Any:
    for p in loc:
        try:
            entry = entry[p]
        except (KeyError, IndexError, TypeError):
            return None
    return entry


def _format_error(err: dict[str, Any], entry: dict[str, Any], label: str) -> str:
    loc = tuple(err.get("loc", ()))
    key = _key(loc)
    if err.get("type") == "extra_forbidden":
        return f"{label}: {key}: {_unknown_key(loc)}"
    if err.get("type") == "missing":
        return f"{label}: {key}: required key is missing"
    value = _value_at(entry, loc)
    shown = "" if value is None else f" = {value!r}"
    return f"{label}: {key}{shown}: {err.get('msg', 'invalid').removeprefix('Value error, ')}"


def load_manifest(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DeployError(f"{path}: manifest not found (pass --manifest PATH)") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise DeployError(f"{path}: not valid YAML{where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise DeployError(f"{path}: not valid YAML: {exc}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML keeps the last of two equal keys without a word; a manifest refuses them."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # `<<: *anchor` merges are allowed, and keys after them may override.
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key_node.value!r}",
                                                        key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)
