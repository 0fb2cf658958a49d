"""The flow deployer (deployments/: manifest, loader, plan, workspace, flows CLI): the
manifest's validation and the desired deployments as tables, then plans and applies
against the session's Prefect test server (conftest `prefect_api`), with Prefect writes
counted (a re-run writes nothing).

The tests use the repository's infra.toml with a fixed prefix, so that the expected
names below do not depend on it."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from deployments import flows as deployer
from deployments.flows import DeployError, ManifestError, main
from deployments.loader import FlowInfo, describe_all
from deployments.plan import IMAGE_WORKDIR, Target, desired_deployments, resolve_target
from infra_tasks.config import load_config
from infra_tasks.prefect_objects import PREFECT_CALLS

ROOT = Path(__file__).resolve().parent.parent
# Not the repository's prefix: the bootstrap tests share the Prefect test server and
# clean it; names of their own keep the two sets of tests out of each other's way.
PREFIX = "deploy-test"
PROD_REGISTRY = "222222222222.dkr.ecr.us-east-1.amazonaws.com"
DEV_REGISTRY = "111111111111.dkr.ecr.us-east-1.amazonaws.com"
TAG = "prefect-agent-abc1234"
POOLS = (f"{PREFIX}-main", f"{PREFIX}-staging")

HELLO = """
deployments:
  - name: hello
    entrypoint: flows/example.py:hello
    parameters:
      name: tests
    tags: [example]
    schedules:
      - cron: "0 6 * * 1-5"
        timezone: Europe/Berlin
    work_pool:
      job_variables:
        cpu: 512
        memory: 1024
"""
FINE = """
  - name: fine
    entrypoint: flows/example.py:hello
"""


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's infra.toml with a prefix Prefect accepts for work pools."""
    text, n = re.subn(r'(?m)^prefix = ".*"$', f'prefix = "{PREFIX}"', (ROOT / "infra.toml").read_text())
    assert n == 1
    path = tmp_path_factory.mktemp("config") / "infra.toml"
    path.write_text(text)
    return path


@pytest.fixture
def deploy(config_path: Path):
    """`python -m deployments.flows` in-process with the test config."""
    def run(*argv: str) -> int:
        return main([*argv, "--config", str(config_path)])
    return run


def manifest(tmp_path: Path, text: str, name: str = "prefect.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def spec(**over: Any) -> deployer.DeploymentSpec:
    return deployer.DeploymentSpec.model_validate({"name": "hello", "entrypoint": "flows/example.py:hello", **over})


# --- branch -> deployment type ------------------------------------------------------------

@pytest.mark.parametrize(("branch", "expected"), [
    ("dev-v2", "dev"), ("staging-v2", "staging"), ("main-v2", "main"),
])
def test_branch_maps_to_deployment_type(branch: str, expected: str) -> None:
    assert deployer.deployment_type_for_branch(branch) == expected


@pytest.mark.parametrize("branch", ["main", "staging", "dev", "feature/x", "MAIN-V2", "main-v2 ", ""])
def test_unknown_branch_is_refused(branch: str) -> None:
    with pytest.raises(DeployError, match="does not deploy flows"):
        deployer.deployment_type_for_branch(branch)


def test_branch_must_be_allowed_by_infra_toml() -> None:
    cfg = load_config(ROOT / "infra.toml")
    assert deployer.environment_for_type(cfg, "main", "main-v2") == "production"
    assert deployer.environment_for_type(cfg, "dev", "dev-v2") == "dev"
    with pytest.raises(DeployError, match="ci_branches"):
        deployer.environment_for_type(cfg, "main", "dev-v2")


# --- manifest validation (pure) ---------------------------------------------------------

def test_shipped_manifest_is_valid_and_loads() -> None:
    assert deployer.DEFAULT_MANIFEST == ROOT / "prefect.yaml"
    specs = deployer.parse_manifest(deployer.load_manifest(deployer.DEFAULT_MANIFEST))
    flows = deployer.load_flows(specs)
    assert {s.name for s in specs} == set(flows) and "hello" in flows


def problems_of(entry_yaml: str) -> list[str]:
    """The problems of a manifest with one deployment `hello`, extended by `entry_yaml`."""
    import yaml

    text = "deployments:\n  - name: hello\n    entrypoint: flows/example.py:hello\n" + textwrap.indent(
        textwrap.dedent(entry_yaml).strip("\n"), "    ")
    raw = yaml.safe_load(text)
    # Later keys replace the base ones (a test may give another name or entrypoint).
    with pytest.raises(ManifestError) as exc:
        deployer.parse_manifest(raw, source="m.yaml")
    assert str(exc.value).startswith(f"m.yaml: {len(exc.value.problems)} problem(s); nothing was deployed:\n  ")
    return exc.value.problems


D = "deployments[0] (hello)"
ALLOWED = "allowed: name, entrypoint, description, parameters, tags, schedules, work_pool, x-deployment-types"
BAD_ENTRIES = [
    # Keys Prefect allows that the deployer decides.
    ("work_pool:\n  name: my-pool",
     f"{D}: work_pool.name: not accepted here: the branch being deployed picks the work pool (<prefix>-<deployment "
     f"type>: dev-v2 -> dev, staging-v2 -> staging, main-v2 -> main); remove it"),
    ("work_pool:\n  work_queue_name: q",
     f"{D}: work_pool.work_queue_name: not accepted here: flow runs go to the work pool's default queue, which the "
     f"agent serves; remove it"),
    ("work_pool:\n  job_variables:\n    image: my/image:1",
     f"{D}: work_pool.job_variables.image: not accepted here: the image is the agent image of the commit being "
     f"deployed (--image-tag); remove it"),
    ("version: '1.0'",
     f"{D}: version: not accepted here: the deployer sets the version to the image tag being deployed; remove it"),
    ("pull: []",
     f"{D}: pull: not accepted here: the agent image already holds the code, and the deployer sets each "
     f"deployment's pull step (set_working_directory to the image's working directory); remove it"),
    ("schedule:\n  cron: '0 6 * * *'",
     f"{D}: schedule: not accepted here: use `schedules:` (a list of {{cron, timezone}}); remove it"),
    ("enforce_parameter_schema: false",
     f"{D}: enforce_parameter_schema: not accepted here: always true: parameters are checked against the flow's "
     f"signature; remove it"),
    # Keys Prefect has that this deployer does not support, and unknown ones.
    ("triggers: []", f"{D}: triggers: a prefect.yaml key this deployer does not support; {ALLOWED}"),
    ("retries: 3", f"{D}: retries: unknown key; {ALLOWED}"),
    ("work_pool:\n  job_variables:\n    task_role_arn: arn:aws:iam::1:role/x",
     f"{D}: work_pool.job_variables.task_role_arn: not settable here: the work pool's defaults (set by bootstrap "
     f"from infra.toml) apply; allowed: cpu, memory, env"),
    ("work_pool:\n  labels: {}", f"{D}: work_pool.labels: unknown key; allowed: job_variables"),
    ("schedules:\n  - interval: 3600",
     f"{D}: schedules[0].interval: not supported (only cron schedules are); allowed: cron, timezone"),
    # Values.
    ("schedules:\n  - cron: '61 * * * *'",
     f"{D}: schedules[0].cron = '61 * * * *' (timezone 'UTC'): Invalid cron string: \"61 * * * *\""),
    ("schedules:\n  - cron: '0 6 * *'",
     f"{D}: schedules[0].cron = '0 6 * *' (timezone 'UTC'): Invalid cron string: \"0 6 * *\""),
    ("schedules:\n  - cron: '0 6 * * *'\n    timezone: Mars/Olympus",
     f"{D}: schedules[0].cron = '0 6 * * *' (timezone 'Mars/Olympus'): Invalid timezone: "
     f'"Mars/Olympus" (specify in IANA tzdata format, for example, America/New_York)'),
    ("schedules:\n  - timezone: UTC", f"{D}: schedules[0].cron: required key is missing"),
    ("schedules:\n  - cron: '0 6 * * *'\n  - cron: '0 6 * * *'\n    timezone: UTC",
     f"{D}: schedules[1] repeats schedules[0]"),
    ("work_pool:\n  job_variables:\n    cpu: 256\n    memory: 4096",
     f"{D}: work_pool.job_variables: cpu = 256, memory = 4096: Fargate does not accept cpu 256 with memory 4096; "
     f"with cpu 256 memory must be one of 512..2048 (512, 1024, 2048)"),
    ("work_pool:\n  job_variables:\n    cpu: 300\n    memory: 512",
     f"{D}: work_pool.job_variables: cpu = 300, memory = 512: cpu 300 is not a Fargate size; allowed cpu: "
     f"[256, 512, 1024, 2048, 4096, 8192, 16384]"),
    ("work_pool:\n  job_variables:\n    cpu: 1024",
     f"{D}: work_pool.job_variables: cpu = 1024, memory = None: give both or neither (neither = the work pool's "
     f"default from infra.toml [flows])"),
    ("work_pool:\n  job_variables:\n    cpu: a lot\n    memory: 2048",
     f"{D}: work_pool.job_variables.cpu = 'a lot': Input should be a valid integer, unable to parse string as an "
     f"integer"),
    ("work_pool:\n  job_variables:\n    env:\n      RETRIES: 3",
     f"{D}: work_pool.job_variables.env.RETRIES = 3: Input should be a valid string"),
    ("entrypoint: flows/example.py",
     f"{D}: entrypoint = 'flows/example.py': must be 'path/to/file.py:function', e.g. 'flows/example.py:hello'"),
    ("entrypoint: /abs/flows/example.py:hello",
     f"{D}: entrypoint = '/abs/flows/example.py:hello': path '/abs/flows/example.py' must be a relative path to a "
     f".py file, inside the repository"),
    ("entrypoint: flows/../tests/x.py:f",
     f"{D}: entrypoint = 'flows/../tests/x.py:f': path 'flows/../tests/x.py' must be a relative path to a .py "
     f"file, inside the repository"),
    ("entrypoint: tests/conftest.py:run_cli",
     f"{D}: entrypoint = 'tests/conftest.py:run_cli': path 'tests/conftest.py' must be under flows/: only those "
     f"directories are copied into the agent image the flows run in"),
    ("entrypoint: flows/example.py:not-ident",
     f"{D}: entrypoint = 'flows/example.py:not-ident': function 'not-ident' is not a Python identifier"),
    ("name: has space",
     "deployments[0] (has space): name = 'has space': must be 1-63 of letters, digits, '-', '_', '.' and start "
     "with a letter or digit"),
    ("tags: [ok, ok]", f"{D}: tags = ['ok', 'ok']: tags must be unique"),
    ("tags: example", f"{D}: tags = 'example': Input should be a valid list"),
    ("x-deployment-types: [prod]", f"{D}: x-deployment-types[0] = 'prod': Input should be 'dev', 'staging' or 'main'"),
    ("x-deployment-types: []",
     f"{D}: x-deployment-types = []: must list each of dev, staging, main at most once, and at least one"),
    ("parameters: name=x", f"{D}: parameters = 'name=x': Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("entry", "expected"), BAD_ENTRIES, ids=[e.split(":")[0] for e, _ in BAD_ENTRIES])
def test_bad_entries_are_rejected_naming_deployment_and_key(entry: str, expected: str) -> None:
    assert problems_of(entry) == [expected]


@pytest.mark.parametrize(("raw", "expected"), [
    ({"deployments": [], "build": None},
     ["build: not accepted here: the agent image already holds the code, and the deployer sets each deployment's "
      "pull step (set_working_directory to the image's working directory); remove it"]),
    ({"flows": []}, ["flows: unknown top-level key; allowed: deployments, name, prefect-version, definitions"]),
    ({"deployments": {"name": "hello"}}, ["deployments: must be a list of mappings (`- name: ...`)"]),
    (["hello"], ["the file must be a mapping with a `deployments:` list"]),
])
def test_bad_top_level_is_rejected(raw: Any, expected: list[str]) -> None:
    with pytest.raises(ManifestError) as exc:
        deployer.parse_manifest(raw, source="m.yaml")
    assert exc.value.problems == expected


def test_prefect_top_level_keys_and_anchors_are_accepted(tmp_path: Path) -> None:
    m = manifest(tmp_path, """
        name: prefect-aws-stack
        prefect-version: 3.9.1
        definitions:
          base: &base
            entrypoint: flows/example.py:hello
            tags: [shared]
        deployments:
          - <<: *base
            name: a
          - <<: *base
            name: b
            tags: [own]
        """)
    a, b = deployer.parse_manifest(deployer.load_manifest(m))
    assert (a.name, a.tags, b.name, b.tags) == ("a", ["shared"], "b", ["own"])
    assert deployer.parse_manifest(None) == [] and deployer.parse_manifest({"deployments": None}) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("deployments:\n  - name: a\n    name: b\n", "m.yaml: not valid YAML (line 3, column 5): duplicate key 'name'"),
    ("deployments:\n  - name: a\n   tags: [\n",
     "m.yaml: not valid YAML (line 3, column 4): expected <block end>, but found '<block mapping start>'"),
])
def test_yaml_errors_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(DeployError) as exc:
        deployer.load_manifest(manifest(tmp_path, text, "m.yaml"))
    assert str(exc.value) == str(tmp_path / expected)


def test_every_problem_is_reported_at_once() -> None:
    raw = {"flows": [], "deployments": [
        {"name": "a", "entrypoint": "flows/example.py:hello", "schedules": [{"cron": "nope"}]},
        {"name": "a", "entrypoint": "flows/example.py:hello",
         "work_pool": {"job_variables": {"cpu": 256, "memory": 9999}}},
        {"entrypoint": "flows/example.py:hello"},
    ]}
    with pytest.raises(ManifestError) as exc:
        deployer.parse_manifest(raw)
    p = exc.value.problems
    assert len(p) == 5
    assert p[0].startswith("flows: unknown top-level key")
    assert p[1] == "deployments[0] (a): schedules[0].cron = 'nope' (timezone 'UTC'): Invalid cron string: \"nope\""
    assert p[2].startswith("deployments[1] (a): work_pool.job_variables: cpu = 256, memory = 9999: Fargate")
    assert p[3] == "deployments[1] (a): name 'a' is already used by deployments[0]"
    assert p[4] == "deployments[2]: name: required key is missing"


@pytest.mark.parametrize(("entrypoint", "params", "fragment"), [
    ("flows/nope.py:hello", {}, "entrypoint = 'flows/nope.py:hello': file flows/nope.py does not exist"),
    ("flows/example.py:goodbye", {}, "has no function 'goodbye'"),
    ("flows/example.py:format_greeting", {}, "'format_greeting' is not a Prefect flow"),
    ("flows/example.py:hello", {"nam": "typo"}, "parameters = {'nam': 'typo'}"),
    ("flows/example.py:hello", {"excited": "very"}, "excited"),
    ("flows/example.py:hello", {"name": ""}, "name"),
])
def test_entrypoints_and_parameters_are_checked_against_the_code(entrypoint: str, params: dict[str, Any],
                                                                 fragment: str) -> None:
    specs = [spec(), spec(name="bad", entrypoint=entrypoint, parameters=params)]
    with pytest.raises(ManifestError) as exc:
        deployer.load_flows(specs)
    assert len(exc.value.problems) == 1
    assert exc.value.problems[0].startswith("deployments[1] (bad): ") and fragment in exc.value.problems[0]


def test_import_errors_are_reported(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(ManifestError, match="importing flows/broken.py failed: ModuleNotFoundError"):
        deployer.load_flows([spec(entrypoint="flows/broken.py:hello")], root=tmp_path)


# --- the desired deployments (pure) -----------------------------------------------------

@pytest.fixture
def cfg(config_path: Path) -> Any:
    return load_config(config_path)


INFO = {"hello": FlowInfo("hello", "Greet someone.", {"type": "object", "properties": {}})}


def desired(cfg: Any, t: str, *specs_: deployer.DeploymentSpec, tag: str = TAG) -> list[Any]:
    specs_ = specs_ or (spec(schedules=[{"cron": "0 6 * * *"}],
                             work_pool={"job_variables": {"cpu": 512, "memory": 1024}}),)
    return desired_deployments(list(specs_), {s.name: INFO["hello"] for s in specs_}, resolve_target(cfg, t, tag))


@pytest.mark.parametrize(("t", "pool", "registry", "scheduled"), [
    ("main", f"{PREFIX}-main", PROD_REGISTRY, True),
    ("staging", f"{PREFIX}-staging", PROD_REGISTRY, False),
    ("dev", f"{PREFIX}-dev", DEV_REGISTRY, False),
])
def test_desired_deployment_per_type(cfg, t: str, pool: str, registry: str, scheduled: bool) -> None:
    [r] = desired(cfg, t)
    assert (r.kind, r.name, r.deployment_type) == ("prefect.deployment", f"hello/hello-{t}", t)
    image = f"{registry}/{PREFIX}:{TAG}"
    assert r.props == {
        "work_pool_name": pool,
        "entrypoint": "flows/example.py:hello",
        "path": IMAGE_WORKDIR,
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}}],
        "job_variables": {"image": image, "cpu": 512, "memory": 1024},
        "parameters": {},
        "tags": [f"deployment-type:{t}", "flows-manifest"],
        "description": "Greet someone.",
        "parameter_openapi_schema": INFO["hello"].parameter_schema,
        "schedules": ["0 6 * * *|UTC"] if scheduled else [],
        "version": TAG,
    }


def test_desired_without_resources_uses_pool_defaults_and_types_filter(cfg) -> None:
    a = spec(name="a", description="mine", work_pool={"job_variables": {"env": {"LEVEL": "debug"}}})
    b = spec(name="b", **{"x-deployment-types": ["main"]})
    assert [r.name for r in desired(cfg, "staging", a, b)] == ["hello/a-staging"]
    ra, rb = desired(cfg, "main", a, b)
    assert ra.props["job_variables"] == {"image": f"{PROD_REGISTRY}/{PREFIX}:{TAG}", "env": {"LEVEL": "debug"}}
    assert ra.props["description"] == "mine"
    assert set(rb.props["job_variables"]) == {"image"}


def test_desired_follows_a_custom_agent_repository_and_rejects_bad_tags(config_path) -> None:
    custom = load_config(config_path, {"agent": {"image_repository": "registry.example.com/team/agent"}})
    [r] = desired(custom, "main")
    assert r.props["job_variables"]["image"] == f"registry.example.com/team/agent:{TAG}"
    with pytest.raises(DeployError, match="not a valid tag"):
        desired(custom, "main", tag="-bad tag")


@pytest.mark.parametrize("prefix", ["prefect-flows", "Prefect-x", "prefectflows"])
def test_pool_names_prefect_reserves_are_refused_before_deploying(cfg, prefix: str) -> None:
    # infra.toml's validation rejects such a prefix too; this is the deployer's own guard
    # (it checks the pool names it will use, whatever names.py makes of the prefix).
    reserved = cfg.model_copy(update={"prefix": prefix})
    with pytest.raises(DeployError, match="reserves work pool names starting with 'prefect'"):
        resolve_target(reserved, "main", TAG)


def test_repository_prefix_gives_usable_work_pool_names() -> None:
    """infra.toml's prefix names the work pools; the Prefect API refuses to create pools
    whose name starts with 'prefect' (HTTP 403 from the server)."""
    from infra_tasks.names import Account

    cfg = load_config(ROOT / "infra.toml")
    for name, env in cfg.environments.items():
        for d in Account(cfg, name, env.account_id, cfg.region).deployments:
            assert deployer.pool_name_error(d.pool) is None, deployer.pool_name_error(d.pool)


def test_the_real_flow_schema_is_the_ui_form() -> None:
    [info] = describe_all(deployer.load_flows([spec()])).values()
    assert info.name == "hello" and info.description.startswith("Greet someone")
    assert info.parameter_schema["properties"]["name"]["maxLength"] == 100


# --- planning and deploying against a Prefect server ------------------------------------------

def deployments_in(pools: tuple[str, ...] | list[str]) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    with get_client(sync_client=True) as client:
        return client.read_deployments(work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=list(pools))))


def read(full_name: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(full_name)


@pytest.fixture
def server(prefect_api: None) -> Iterator[tuple[str, ...]]:
    """The ECS work pools bootstrap manages, as the deployer expects to find them, empty."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect_aws.workers.ecs_worker import ECSWorker

    with get_client(sync_client=True) as client:
        for pool in POOLS:
            try:
                client.create_work_pool(WorkPoolCreate(
                    name=pool, type="ecs", base_job_template=ECSWorker.get_default_base_job_template()))
            except ObjectAlreadyExists:
                pass
        for d in deployments_in(POOLS):
            client.delete_deployment(d.id)
    yield POOLS


def mutations() -> list[str]:
    out = PREFECT_CALLS.mutating()
    PREFECT_CALLS.reset()
    return out


def plan_rows(out: str) -> list[str]:
    """The plan table's rows and diff lines, whitespace collapsed."""
    return [" ".join(line.split()) for line in out.splitlines() if line.startswith((" ", "create", "update",
                                                                                   "no-op"))]


def test_first_run_creates_a_rerun_writes_nothing_a_change_updates_only_that(deploy, server, tmp_path,
                                                                             capsys) -> None:
    m = manifest(tmp_path, HELLO)
    args = ("--branch", "main-v2", "--manifest", str(m), "--image-tag", TAG)
    PREFECT_CALLS.reset()
    assert deploy(*args) == 0
    out, err = capsys.readouterr()
    assert mutations() == ["prefect:CreateFlow", "prefect:CreateDeployment", "prefect:CreateDeploymentSchedules"]
    assert out.splitlines()[0] == (f"Flow deployments of type 'main' in work pool {PREFIX}-main "
                                   f"({deployer.workspace.api_url()}): 1 to create, 0 to update, 0 unchanged")
    assert plan_rows(out) == ["create prefect.deployment/hello/hello-main does not exist"]
    assert "Deployed to " in out and "created hello/hello-main; 0 unchanged." in out
    assert err.splitlines()[-1] == "Prefect writes: 3"

    d = read("hello/hello-main")
    assert d.work_pool_name == f"{PREFIX}-main"
    assert d.job_variables == {"image": f"{PROD_REGISTRY}/{PREFIX}:{TAG}", "cpu": 512, "memory": 1024}
    assert d.entrypoint == "flows/example.py:hello"
    assert d.path == IMAGE_WORKDIR
    assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_WORKDIR}}]
    assert d.parameters == {"name": "tests"}
    assert d.version == TAG
    assert d.description.startswith("Greet someone")
    assert d.tags == ["example", "deployment-type:main", deployer.MANIFEST_TAG]
    assert d.enforce_parameter_schema is True
    assert d.parameter_openapi_schema["properties"]["name"]["maxLength"] == 100
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules] == [
        ("0 6 * * 1-5", "Europe/Berlin", True)]
    assert [x.name for x in deployments_in(server)] == ["hello-main"]

    # Second run: read, compare, nothing written; --plan agrees (exit 0).
    assert deploy(*args) == 0
    out, err = capsys.readouterr()
    assert mutations() == []
    assert plan_rows(out) == ["no-op prefect.deployment/hello/hello-main in sync"]
    assert "No changes: every deployment matches the manifest; nothing was written." in out
    assert err.splitlines()[-1] == "Prefect writes: 0"
    assert deploy(*args, "--plan") == 0
    capsys.readouterr()

    # One parameter changed: --plan shows the one diff and exits 2, writing nothing...
    changed = manifest(tmp_path, HELLO.replace("name: tests", "name: other"), "changed.yaml")
    args = ("--branch", "main-v2", "--manifest", str(changed), "--image-tag", TAG)
    assert deploy(*args, "--plan") == 2
    out = capsys.readouterr().out
    assert mutations() == []
    assert plan_rows(out) == ["update prefect.deployment/hello/hello-main 1 property differs", "~ parameters.name: tests -> other"]
    # ... and the apply makes exactly that one update, in place.
    assert deploy(*args) == 0
    assert mutations() == ["prefect:UpdateDeployment"]
    after = read("hello/hello-main")
    assert after.id == d.id and after.parameters == {"name": "other"}
    assert deploy(*args) == 0 and mutations() == []


def test_new_image_schedule_and_size_update_in_place(deploy, server, tmp_path, capsys) -> None:
    first = manifest(tmp_path, HELLO)
    assert deploy("--branch", "main-v2", "--manifest", str(first), "--image-tag", TAG) == 0
    before = read("hello/hello-main")
    changed = manifest(tmp_path, HELLO.replace("0 6 * * 1-5", "30 2 * * *").replace("cpu: 512", "cpu: 256"),
                       "changed.yaml")
    capsys.readouterr()
    PREFECT_CALLS.reset()
    assert deploy("--branch", "main-v2", "--manifest", str(changed), "--image-tag", "prefect-agent-def5678") == 0
    assert mutations() == ["prefect:UpdateDeployment", "prefect:DeleteDeploymentSchedule",
                           "prefect:CreateDeploymentSchedules"]
    rows = plan_rows(capsys.readouterr().out)
    assert rows[0] == "update prefect.deployment/hello/hello-main 4 properties differ"
    assert rows[1:] == [
        "~ job_variables.cpu: 512 -> 256",
        "~ job_variables.image:",
        f"current: {PROD_REGISTRY}/{PREFIX}:{TAG}",
        f"desired: {PROD_REGISTRY}/{PREFIX}:prefect-agent-def5678",
        '~ schedules: ["0 6 * * 1-5|Europe/Berlin"] -> ["30 2 * * *|Europe/Berlin"]',
        f"~ version: {TAG} -> prefect-agent-def5678",
    ]
    after = read("hello/hello-main")
    assert after.id == before.id
    assert [s.schedule.cron for s in after.schedules] == ["30 2 * * *"]
    assert after.job_variables["cpu"] == 256 and after.job_variables["image"].endswith(":prefect-agent-def5678")
    # Schedules and the size removed from the manifest are removed from the deployment.
    bare = manifest(tmp_path, HELLO.split("    schedules:")[0], "bare.yaml")
    assert deploy("--branch", "main-v2", "--manifest", str(bare), "--image-tag", TAG) == 0
    d = read("hello/hello-main")
    assert d.schedules == [] and d.job_variables == {"image": f"{PROD_REGISTRY}/{PREFIX}:{TAG}"}
    assert deploy("--branch", "main-v2", "--manifest", str(bare), "--image-tag", TAG, "--plan") == 0
    assert len(deployments_in(server)) == 1


def test_staging_deploys_without_schedule(deploy, server, tmp_path) -> None:
    m = manifest(tmp_path, HELLO)
    assert deploy("--branch", "staging-v2", "--manifest", str(m), "--image-tag", TAG) == 0
    d = read("hello/hello-staging")
    assert d.work_pool_name == f"{PREFIX}-staging"
    assert d.job_variables["image"] == f"{PROD_REGISTRY}/{PREFIX}:{TAG}"
    assert d.schedules == []
    assert [x.name for x in deployments_in(server)] == ["hello-staging"]


def test_deployments_missing_from_the_manifest_are_reported_not_deleted(deploy, server, tmp_path, capsys) -> None:
    from prefect.client.orchestration import get_client

    two = manifest(tmp_path, HELLO + FINE)
    assert deploy("--branch", "main-v2", "--manifest", str(two), "--image-tag", TAG) == 0
    # A deployment someone else made in the same pool (e.g. bootstrap's drift check).
    with get_client(sync_client=True) as client:
        client.create_deployment(flow_id=client.create_flow_from_name("drift-check"), name="drift-check",
                                 work_pool_name=f"{PREFIX}-main", entrypoint="flows/drift.py:check")
    one = manifest(tmp_path, HELLO, "one.yaml")
    capsys.readouterr()
    PREFECT_CALLS.reset()
    for extra in ((), ("--plan",)):
        assert deploy("--branch", "main-v2", "--manifest", str(one), "--image-tag", TAG, *extra) == 0
        err = capsys.readouterr().err
        assert ("Not in the manifest (left alone; remove with `prefect deployment delete NAME` if retired): "
                "hello/fine-main") in err
        assert "drift-check" not in err
    assert mutations() == []
    assert sorted(x.name for x in deployments_in(server)) == ["drift-check", "fine-main", "hello-main"]


def test_dry_run_creates_nothing(deploy, server, tmp_path, capsys) -> None:
    m = manifest(tmp_path, HELLO)
    assert deploy("--branch", "main-v2", "--manifest", str(m), "--image-tag", TAG, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "Would deploy 1 flow deployment(s) of type 'main'" in out
    assert f"{PROD_REGISTRY}/{PREFIX}:{TAG}" in out and "cron '0 6 * * 1-5' (Europe/Berlin)" in out
    assert "Dry run: nothing was created." in out
    assert deployments_in(server) == []


def test_dry_run_needs_no_prefect_api(deploy, tmp_path, capsys) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    m = manifest(tmp_path, HELLO)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert deploy("--branch", "staging-v2", "--manifest", str(m), "--dry-run") == 0
        assert deploy("--branch", "staging-v2", "--manifest", str(m)) == 1
        assert deploy("--branch", "staging-v2", "--manifest", str(m), "--plan") == 1
    assert "no Prefect API is configured" in capsys.readouterr().err


def test_a_prefect_api_that_does_not_answer_is_one_message(deploy, tmp_path, capsys) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    m = manifest(tmp_path, HELLO)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert deploy("--branch", "main-v2", "--manifest", str(m), "--plan") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: reading failed for the deployments of work pool {PREFIX}-main: the Prefect API at "
                          f"http://127.0.0.1:9/api did not answer")
    assert err.rstrip().endswith("Nothing was deployed.") and "Traceback" not in err


BAD_MANIFESTS = {
    "unknown entrypoint": ("entrypoint: flows/example.py:hello", "entrypoint: flows/missing.py:hello",
                           "file flows/missing.py does not exist"),
    "missing function": ("entrypoint: flows/example.py:hello", "entrypoint: flows/example.py:nope",
                         "has no function 'nope'"),
    "not a flow": ("entrypoint: flows/example.py:hello", "entrypoint: flows/example.py:format_greeting",
                   "is not a Prefect flow"),
    "bad cron": ('cron: "0 6 * * 1-5"', 'cron: "0 25 * * *"', "schedules[0].cron = '0 25 * * *'"),
    "invalid cpu/memory": ("memory: 1024", "memory: 512", "cpu = 512, memory = 512: Fargate does not accept"),
    "unknown key": ("tags: [example]", "tags: [example]\n    retries: 3", "retries: unknown key"),
    "pool chosen": ("    work_pool:\n", "    work_pool:\n      name: mine\n", "work_pool.name: not accepted here"),
    "bad parameter": ("name: tests", "name: tests\n      loud: true", "parameters = {'name': 'tests', 'loud': True}"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_changes_nothing(deploy, server, tmp_path, capsys, case: str) -> None:
    old, new, fragment = BAD_MANIFESTS[case]
    good = manifest(tmp_path, HELLO + FINE, "good.yaml")
    assert deploy("--branch", "main-v2", "--manifest", str(good), "--image-tag", TAG) == 0
    before = {d.name: (d.updated, d.parameters, d.job_variables) for d in deployments_in(server)}
    assert HELLO.count(old) == 1
    # The broken deployment comes first, a valid one after it: neither changes.
    bad = manifest(tmp_path, HELLO.replace(old, new) + FINE.replace("entrypoint:", "tags: [new]\n    entrypoint:"),
                   "bad.yaml")
    capsys.readouterr()
    PREFECT_CALLS.reset()
    assert deploy("--branch", "main-v2", "--manifest", str(bad), "--image-tag", "prefect-agent-new1234") == 1
    err = capsys.readouterr().err
    assert "(hello)" in err and fragment in err and "nothing was deployed" in err
    assert mutations() == []
    assert {d.name: (d.updated, d.parameters, d.job_variables) for d in deployments_in(server)} == before


def test_unknown_branch_deploys_nothing(deploy, server, tmp_path, capsys) -> None:
    m = manifest(tmp_path, HELLO)
    assert deploy("--branch", "feature/new-flow", "--manifest", str(m)) == 1
    assert "branch 'feature/new-flow' does not deploy flows" in capsys.readouterr().err
    assert deployments_in(server) == []


def test_missing_work_pool_deploys_nothing(server, config_path, tmp_path, capsys) -> None:
    other = tmp_path / "infra.toml"
    other.write_text(config_path.read_text().replace(f'prefix = "{PREFIX}"', 'prefix = "other-flows"'))
    m = manifest(tmp_path, HELLO)
    assert main(["--branch", "main-v2", "--manifest", str(m), "--config", str(other)]) == 1
    err = capsys.readouterr().err
    assert "work pool 'other-flows-main' does not exist" in err and "bootstrap" in err
    assert deployments_in(["other-flows-main", *server]) == []


def test_target_is_resolved_once(cfg) -> None:
    assert resolve_target(cfg, "main", TAG) == Target(
        t="main", env_name="production", account_id="222222222222", region="us-east-1", pool=f"{PREFIX}-main",
        image=f"{PROD_REGISTRY}/{PREFIX}:{TAG}", image_tag=TAG)


def test_example_flow_runs(prefect_api) -> None:
    from flows.example import format_greeting, hello

    assert format_greeting("  data   team ", excited=True) == "Hello, data team!"
    assert format_greeting("") == "Hello, world."
    assert hello(name="pipeline") == "Hello, pipeline."
