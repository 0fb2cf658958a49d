"""Prefect-side resources, reconciled like AWS ones: ECS work pools (upserting only
the job-template defaults we own), AwsCredentials and S3Bucket blocks, the global
concurrency limit that serialises mutating runs, the management deployments and the
automation that sends drift alerts through a notification block.

They talk to the Prefect API the process is connected to (the active profile or
PREFECT_API_URL). Writes are counted in `PREFECT_CALLS` like AWS calls are.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any, Callable

# Imported here, once, in the importing (main) thread: a first import of prefect_aws
# from several reader or apply threads at once can fail in one of them, which removes
# it from sys.modules under the others ("KeyError: 'prefect_aws'" when saving a block).
from prefect_aws import AwsCredentials, S3Bucket  # noqa: E402

from .aws import CallLog, InfraError
from .handler import Handler
from .model import Diff, Observed, Resource
from .prefect_client import sync_client

PREFECT_CALLS = CallLog()


def _client() -> Any:
    return sync_client()


def _record(op: str) -> None:
    PREFECT_CALLS.record("prefect", op)


def _delete(op: str, method: str, *args: Any) -> None:
    """One Prefect delete; an object already gone is done (a re-run after a crash)."""
    with _client() as c:
        _record(op)
        try:
            getattr(c, method)(*args)
        except Exception as exc:  # noqa: BLE001
            if not _not_found(exc):
                raise


def translate(exc: Exception, action: str, resource: str) -> Exception:
    """The Prefect API not answering (or answering 5xx) as an error naming the resource,
    the API and the next step; any other exception is returned as it is (a bug shows)."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    status = exc.response.status_code if isinstance(exc, PrefectHTTPStatusError) else None
    if isinstance(exc, (httpx.TransportError, OSError)) or (status is not None and status >= 500):
        api = PREFECT_API_URL.value() or "the temporary local server"
        return InfraError(f"{action} failed for {resource}: the Prefect API at {api} did not answer "
                          f"({type(exc).__name__}: {exc})\n  next step: check that the Prefect server is up and "
                          f"PREFECT_API_URL points at it, then re-run (completed changes are not repeated)")
    return exc


def _not_found(exc: BaseException) -> bool:
    from prefect.exceptions import ObjectNotFound

    return isinstance(exc, ObjectNotFound)


def _read(method: str, *args: Any, **kwargs: Any) -> Any:
    """One Prefect read; "not found" is None, never an exception."""
    with _client() as c:
        try:
            return getattr(c, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                return None
            raise


# --- work pools ------------------------------------------------------------------------

def base_template(pool_type: str) -> dict[str, Any]:
    if pool_type == "ecs":
        from prefect_aws.workers.ecs_worker import ECSWorker

        return ECSWorker.get_default_base_job_template()
    from prefect.workers.process import ProcessWorker

    return ProcessWorker.get_default_base_job_template()


def with_defaults(template: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`template` with our defaults set; every other part of it kept as it is."""
    out = copy.deepcopy(template)
    props = out.setdefault("variables", {}).setdefault("properties", {})
    for name, value in defaults.items():
        props.setdefault(name, {})["default"] = value
    return out


_WRITES = threading.RLock()  # re-entrant: an update may be a create (blocks)


def _local_api() -> bool:
    """Whether the Prefect API is on this machine (loopback, or Prefect's ephemeral one)."""
    from urllib.parse import urlsplit

    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return not url or urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


class PrefectHandler(Handler):
    """A Prefect object's handler. Against a Prefect server on this machine its writes
    (create, update, replace, delete) run one at a time in this process: such a server
    is usually `prefect server start` on SQLite (the sandbox's, a laptop's), which answers
    a write that meets another one with 503, and the client then backs off for 2, 4, 8 ...
    seconds — parallel writes made a cold bootstrap wait several times longer than its
    writes take, and one at a time costs nothing without network latency. Against a
    remote API (Prefect Cloud, a hosted server) writes stay parallel: there each one
    waits on the network. Reads are always parallel; AWS changes are not affected."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("create", "update", "replace", "delete"):
            if name in vars(cls):
                setattr(cls, name, _one_at_a_time(vars(cls)[name]))


def _one_at_a_time(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def write(*args: Any, **kwargs: Any) -> Any:
        if not _local_api():
            return method(*args, **kwargs)
        with _WRITES:
            return method(*args, **kwargs)
    return write


class WorkPoolHandler(PrefectHandler):
    kind = "prefect.work_pool"
    taggable = False  # pools carry no tags; a pool with our name is upserted, never replaced
    replace_paths = ("type",)

    def read(self, res: Resource) -> Observed | None:
        pool = _read("read_work_pool", res.name)
        if pool is None:
            return None
        template = pool.base_job_template or {}
        props = template.get("variables", {}).get("properties", {})
        defaults = {name: props.get(name, {}).get("default") for name in res.props["defaults"]}
        return Observed({"type": pool.type, "defaults": defaults, "description": pool.description or ""},
                        outputs={"id": str(pool.id), "name": pool.name, "template": template})

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        from prefect.client.schemas.actions import WorkPoolCreate

        template = with_defaults(base_template(props["type"]), props["defaults"])
        with _client() as c:
            _record("CreateWorkPool")
            pool = c.create_work_pool(WorkPoolCreate(name=res.name, type=props["type"], base_job_template=template,
                                                     description=props["description"]))
        return {"id": str(pool.id), "name": pool.name, "template": template}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        from prefect.client.schemas.actions import WorkPoolUpdate

        # Upsert: only our defaults change; variables, job configuration and defaults a
        # person set elsewhere in the template are kept.
        template = with_defaults(observed.outputs["template"], props["defaults"])
        with _client() as c:
            _record("UpdateWorkPool")
            c.update_work_pool(res.name, WorkPoolUpdate(base_job_template=template,
                                                        description=props["description"]))
        return {**observed.outputs, "template": template}

    def delete_blocker(self, res: Resource, observed: Observed) -> str | None:
        # The teardown deletes the deployments this project registered on the pool first;
        # anyone else's would be left pointing at nothing.
        foreign = [name for name, tags in deployments_on_pool(res.name) if not ours(tags)]
        if foreign:
            return (f"{res.key}: deployments not registered by this project use this pool: {', '.join(foreign)}; "
                    f"delete them (prefect deployment delete NAME) or move them to another pool first")
        return None

    def delete(self, res: Resource, observed: Observed) -> None:
        _delete("DeleteWorkPool", "delete_work_pool", res.name)


# The tag the flow deployer (deployments/) puts on every deployment it registers, and the
# management deployments' tag: what marks a deployment on our pools as this project's.
FLOWS_MANIFEST_TAG = "flows-manifest"
INFRA_TAG = "infra"


def ours(tags: list[str]) -> bool:
    return FLOWS_MANIFEST_TAG in tags or INFRA_TAG in tags


def deployments_on_pool(pool: str) -> list[tuple[str, list[str]]]:
    """(`flow/deployment` name, tags) of every deployment that uses the pool."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    with _client() as c:
        deps = c.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
        flows = {d.flow_id for d in deps}
        names = {f.id: f.name for f in (c.read_flows() if flows else []) if f.id in flows}
    return sorted((f"{names.get(d.flow_id, d.flow_id)}/{d.name}", list(d.tags or [])) for d in deps)


# --- blocks ------------------------------------------------------------------------------

def _block_class(slug: str) -> Any:
    return {"aws-credentials": AwsCredentials, "s3-bucket": S3Bucket}[slug]


def block_properties(slug: str, data: dict[str, Any], references: dict[str, Any]) -> dict[str, Any]:
    """A block document's compared properties, from its data as the API returns it (secret
    values obfuscated) and its references to other block documents (an S3 bucket's
    credentials are one, by name)."""
    if slug == "aws-credentials":
        params = data.get("aws_client_parameters") or {}
        return {"region_name": data.get("region_name") or "", "endpoint_url": params.get("endpoint_url") or "",
                "static_keys": bool(data.get("aws_access_key_id"))}
    credentials = (references.get("credentials") or {}).get("block_document") or {}
    return {"bucket_name": data.get("bucket_name"), "credentials": credentials.get("name") or ""}


def _save(block: Any, name: str) -> Any:
    """`Block.save`, once more if it met another save at a moment two cannot both win
    (parallel writes, against a remote API; seen on a new PostgreSQL-backed server):
    - Prefect registers a block type and schema by reading, then creating: two saves at
      once can both create, and one gets 409 Conflict (ObjectAlreadyExists);
    - a server's first block documents create its key for block secrets, and one of two
      first saves at once gets 409 on it (`uq_configuration__key`); Prefect's client
      takes any 409 for "a document of that name exists", reads it to overwrite it and
      fails with ObjectNotFound.
    The second save finds the type, schema and key made."""
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        return block.save(name, overwrite=True)
    except (ObjectAlreadyExists, ObjectNotFound):
        return block.save(name, overwrite=True)


class BlockHandler(PrefectHandler):
    """`res.name` is `{block-type-slug}/{block name}`."""

    kind = "prefect.block"
    taggable = False

    @staticmethod
    def _split(res: Resource) -> tuple[str, str]:
        slug, name = res.name.split("/", 1)
        return slug, name

    def read(self, res: Resource) -> Observed | None:
        slug, name = self._split(res)
        # One read, without secret values: the compared properties hold none.
        doc = _read("read_block_document_by_name", name, slug, include_secrets=False)
        if doc is None:
            return None
        return Observed(block_properties(slug, doc.data, doc.block_document_references),
                        outputs={"id": str(doc.id), "name": name})

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        slug, name = self._split(res)
        cls = _block_class(slug)
        if slug == "aws-credentials":
            from prefect_aws.client_parameters import AwsClientParameters

            block = cls(region_name=props["region_name"],
                        aws_client_parameters=AwsClientParameters(endpoint_url=props["endpoint_url"] or None))
        else:
            block = cls(bucket_name=props["bucket_name"], credentials=_block_class("aws-credentials").load(
                props["credentials"]))
        _record("SaveBlockDocument")
        return {"id": str(_save(block, name)), "name": name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        return self.create(res, props)

    def delete(self, res: Resource, observed: Observed) -> None:
        _delete("DeleteBlockDocument", "delete_block_document", observed.outputs["id"])


# --- the global concurrency limit ----------------------------------------------------------

class ConcurrencyLimitHandler(PrefectHandler):
    kind = "prefect.concurrency_limit"
    taggable = False

    def read(self, res: Resource) -> Observed | None:
        gcl = _read("read_global_concurrency_limit_by_name", res.name)
        if gcl is None:
            return None
        return Observed({"limit": gcl.limit, "active": gcl.active}, outputs={"id": str(gcl.id), "name": res.name})

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        # Upsert: the lock may already have been made by `lock.ensure` when this run started.
        existing = self.read(res)
        if existing is not None:
            return self.update(res, props, existing, [])
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

        with _client() as c:
            _record("CreateGlobalConcurrencyLimit")
            gid = c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                name=res.name, limit=props["limit"], active=props["active"]))
        return {"id": str(gid), "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        if observed.props == {k: props[k] for k in observed.props}:
            return observed.outputs
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

        with _client() as c:
            _record("UpdateGlobalConcurrencyLimit")
            c.update_global_concurrency_limit(res.name, GlobalConcurrencyLimitUpdate(
                limit=props["limit"], active=props["active"]))
        return observed.outputs

    def delete(self, res: Resource, observed: Observed) -> None:
        _delete("DeleteGlobalConcurrencyLimit", "delete_global_concurrency_limit_by_name", res.name)


# --- deployments ---------------------------------------------------------------------------

DEPLOYMENT_FIELDS = ("work_pool_name", "entrypoint", "path", "job_variables", "parameters", "tags", "description",
                     "parameter_openapi_schema", "pull_steps")
# Managed only when the desired properties have them (the flow deployer sets the version).
OPTIONAL_FIELDS = ("version",)


def _fields(props: dict[str, Any]) -> tuple[str, ...]:
    return (*DEPLOYMENT_FIELDS, *(f for f in OPTIONAL_FIELDS if f in props))


class DeploymentHandler(PrefectHandler):
    """`res.name` is `{flow name}/{deployment name}`."""

    kind = "prefect.deployment"
    taggable = False

    def read(self, res: Resource) -> Observed | None:
        dep = _read("read_deployment_by_name", res.name)
        if dep is None:
            return None
        schedules = _read("read_deployment_schedules", dep.id) or []
        props = {f: _plain(getattr(dep, f, None)) for f in _fields(res.props)}
        props["schedules"] = sorted(_schedule_key(s) for s in schedules)
        return Observed(props, outputs={"id": str(dep.id), "name": res.name,
                                        "schedule_ids": {_schedule_key(s): str(s.id) for s in schedules}})

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        flow_name, name = res.name.split("/", 1)
        with _client() as c:
            _record("CreateFlow")
            flow_id = c.create_flow_from_name(flow_name)
            _record("CreateDeployment")
            dep_id = c.create_deployment(flow_id=flow_id, name=name, **{f: props[f] for f in _fields(props)})
            self._schedules(c, dep_id, props["schedules"], {})
        return {"id": str(dep_id), "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        from prefect.client.schemas.actions import DeploymentUpdate

        dep_id = observed.outputs["id"]
        with _client() as c:
            fields = {f: props[f] for f in _fields(props) if any(d.path.split(".")[0] == f for d in diffs)}
            if fields:
                _record("UpdateDeployment")
                c.update_deployment(dep_id, DeploymentUpdate(**fields))
            if any(d.path == "schedules" for d in diffs):
                self._schedules(c, dep_id, props["schedules"], observed.outputs["schedule_ids"])
        return observed.outputs

    def delete(self, res: Resource, observed: Observed) -> None:
        _delete("DeleteDeployment", "delete_deployment", observed.outputs["id"])

    @staticmethod
    def _schedules(c: Any, dep_id: Any, want: list[str], have: dict[str, str]) -> None:
        from prefect.client.schemas.schedules import CronSchedule

        for key, sid in have.items():
            if key not in want:
                _record("DeleteDeploymentSchedule")
                c.delete_deployment_schedule(dep_id, sid)
        new = [k for k in want if k not in have]
        if new:
            _record("CreateDeploymentSchedules")
            c.create_deployment_schedules(dep_id, [
                (CronSchedule(cron=k.split("|")[0], timezone=k.split("|")[1]), True) for k in new])


def schedule_key(cron: str, timezone: str = "UTC") -> str:
    return f"{cron}|{timezone}"


def _schedule_key(s: Any) -> str:
    sched = s.schedule
    return schedule_key(getattr(sched, "cron", str(sched)), getattr(sched, "timezone", None) or "UTC")


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- the drift-alert automation ---------------------------------------------------------------

def block_ref_of(doc: Any) -> str:
    """A block document as `{block type slug}/{name}`, the form infra.toml names it in."""
    return f"{doc.block_type.slug}/{doc.name}" if doc.block_type else f"?/{doc.name}"


def normalise_trigger(trigger: dict[str, Any]) -> dict[str, Any]:
    """A trigger as the API returns it (JSON), reduced to what we set, with its sets
    (`expect`, `after`, `for_each`) sorted: Prefect serialises them in no fixed order."""
    if trigger.get("type") in ("compound", "sequence"):
        out = {"type": trigger["type"], "within": trigger.get("within"),
               "triggers": [normalise_trigger(t) for t in trigger.get("triggers") or []]}
        if trigger["type"] == "compound":
            out["require"] = trigger.get("require")
        return out
    out = {k: trigger.get(k) for k in ("type", "posture", "threshold", "match", "match_related")}
    out.update({k: sorted(trigger.get(k) or []) for k in ("expect", "after", "for_each")})
    out["within"] = float(trigger.get("within") or 0)
    return out


def normalise_actions(actions: list[dict[str, Any]], block_refs: dict[str, str]) -> list[dict[str, Any]]:
    """Actions as the API returns them (JSON); a notification's block id shown as the
    block's `{slug}/{name}` (`block_refs`), or as a deleted block."""
    out = []
    for a in actions:
        if a.get("type") == "send-notification":
            bid = str(a.get("block_document_id"))
            out.append({"type": a["type"], "block": block_refs.get(bid, f"(deleted block {bid})"),
                        "subject": a.get("subject"), "body": a.get("body")})
        else:
            out.append({"type": a.get("type"), "other": {k: v for k, v in a.items() if k != "type"}})
    return out


class AutomationHandler(PrefectHandler):
    """`res.name` is the automation's name (unique by our convention: Prefect allows
    several automations of one name; the first is ours, others are left alone).
    `res.ident["config_key"]` names the setting the notification block comes from."""

    kind = "prefect.automation"
    taggable = False

    def _block_id(self, res: Resource, ref: str) -> str:
        """The configured notification block's id; a missing block stops the plan here,
        naming the key and the block (before anything is changed)."""
        slug, name = ref.split("/", 1)
        doc = _read("read_block_document_by_name", name, slug, include_secrets=False)
        if doc is None:
            key = res.ident.get("config_key", "prefect.alerts_block")
            raise InfraError(f"{res.key}: {key} = {ref!r}, but there is no {slug!r} block named {name!r} in this "
                             f"Prefect workspace\n  next step: create it (UI: Blocks -> add a {slug} block named "
                             f"{name!r}), or correct or remove {key} in infra.toml")
        return str(doc.id)

    def read(self, res: Resource) -> Observed | None:
        wanted = {a["block"] for a in res.props["actions"] if a.get("type") == "send-notification"}
        refs = {self._block_id(res, ref): ref for ref in sorted(wanted)}
        found = _read("read_automations_by_name", res.name) or []
        if not found:
            return None
        auto = found[0]
        dump = auto.model_dump(mode="json")
        for a in dump["actions"]:
            bid = str(a.get("block_document_id", ""))
            if a.get("type") == "send-notification" and bid not in refs:
                doc = _read("read_block_document", a["block_document_id"], include_secrets=False)
                if doc is not None:
                    refs[bid] = block_ref_of(doc)
        props = {"description": dump["description"], "enabled": dump["enabled"],
                 "trigger": normalise_trigger(dump["trigger"]), "actions": normalise_actions(dump["actions"], refs)}
        return Observed(props, outputs={"id": str(auto.id), "name": res.name})

    def _core(self, res: Resource, props: dict[str, Any]) -> Any:
        from prefect.events.actions import SendNotification
        from prefect.events.schemas.automations import AutomationCore

        actions = [SendNotification(block_document_id=self._block_id(res, a["block"]), subject=a["subject"],
                                    body=a["body"]) for a in props["actions"]]
        return AutomationCore(name=res.name, description=props["description"], enabled=props["enabled"],
                              trigger=props["trigger"], actions=actions)

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        core = self._core(res, props)
        with _client() as c:
            _record("CreateAutomation")
            aid = c.create_automation(core)
        return {"id": str(aid), "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        # The whole automation is written: the API has no partial update of a trigger.
        core = self._core(res, props)
        with _client() as c:
            _record("UpdateAutomation")
            c.update_automation(observed.outputs["id"], core)
        return observed.outputs

    def delete(self, res: Resource, observed: Observed) -> None:
        _delete("DeleteAutomation", "delete_automation", observed.outputs["id"])


# --- variables (read and deleted only: the lock's holder, the approved overrides) ---------------

class VariableHandler(PrefectHandler):
    """Variables are written by their owners (`lock`, `overrides`); a teardown reads and
    deletes them. `res.ident["data"]`: the variable records something people decided (the
    UI-approved overrides), kept unless --delete-data."""

    kind = "prefect.variable"
    taggable = False

    def read(self, res: Resource) -> Observed | None:
        var = _read("read_variable_by_name", res.name)
        return None if var is None else Observed({}, outputs={"id": str(var.id), "name": res.name})

    def delete(self, res: Resource, observed: Observed) -> None:
        _delete("DeleteVariable", "delete_variable_by_name", res.name)


HANDLERS: list[Handler] = [WorkPoolHandler(), BlockHandler(), ConcurrencyLimitHandler(), DeploymentHandler(),
                           AutomationHandler(), VariableHandler()]
