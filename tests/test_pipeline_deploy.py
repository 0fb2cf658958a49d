"""The flow deployer (deployments/flows.py): pure mapping and validation as tables,
then real deployments against the session's Prefect test server (conftest `prefect_api`).

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
from infra_tasks.config import load_config

ROOT = Path(__file__).resolve().parent.parent
# Not the repository's prefix: the bootstrap tests share the Prefect test server and
# clean it; names of their own keep the two sets of tests out of each other's way.
PREFIX = "deploy-test"
PROD_REGISTRY = "222222222222.dkr.ecr.us-east-1.amazonaws.com"
DEV_REGISTRY = "111111111111.dkr.ecr.us-east-1.amazonaws.com"
TAG = "prefect-agent-abc1234"
POOLS = (f"{PREFIX}-main", f"{PREFIX}-staging")

HELLO = """
[[flows]]
name = "hello"
entrypoint = "flows/example.py:hello"
parameters = { name = "tests" }
cpu = 512
memory = 1024
tags = ["example"]
cron = "0 6 * * 1-5"
timezone = "Europe/Berlin"
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


def manifest(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "flows.toml"
    p.write_text(textwrap.dedent(text))
    return p


def spec(**over: Any) -> deployer.FlowSpec:
    return deployer.FlowSpec(**{"name": "hello", "entrypoint": "flows/example.py:hello", **over})


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
    specs = deployer.parse_manifest(deployer.load_manifest(deployer.DEFAULT_MANIFEST))
    flows = deployer.load_flows(specs)
    assert {s.name for s in specs} == set(flows) and "hello" in flows


@pytest.mark.parametrize(("entry", "fragment"), [
    ({"cron": "61 * * * *"}, "flows[0] (hello): cron = '61 * * * *'"),
    ({"cron": "0 6 * *"}, "flows[0] (hello): cron = '0 6 * *'"),
    ({"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus'"),
    ({"timezone": "UTC"}, "timezone is set but cron is not"),
    ({"cpu": 256, "memory": 4096}, "flows[0] (hello): cpu = 256, memory = 4096: Fargate does not accept"),
    ({"cpu": 300, "memory": 512}, "cpu 300 is not a Fargate size"),
    ({"cpu": 1024}, "give both or neither"),
    ({"memory": 2048}, "give both or neither"),
    ({"cpu": "a lot", "memory": 2048}, "flows[0] (hello): cpu = 'a lot'"),
    ({"schedule": "daily"}, "flows[0] (hello): schedule: unknown key"),
    ({"entrypoint": "flows/example.py"}, "path/to/file.py:function"),
    ({"entrypoint": "/abs/flows/example.py:hello"}, "relative path"),
    ({"entrypoint": "flows/../tests/x.py:f"}, "relative path"),
    ({"entrypoint": "tests/conftest.py:run_cli"}, "must be under flows/"),
    ({"entrypoint": "flows/example.py:not-ident"}, "not a Python identifier"),
    ({"name": "has space"}, "flows[0] (has space): name = 'has space'"),
    ({"tags": ["ok", "ok"]}, "tags must be unique"),
    ({"deployment_types": ["prod"]}, "deployment_types.0"),
    ({"parameters": "name=x"}, "parameters"),
])
def test_bad_entries_are_rejected_naming_flow_and_key(entry: dict[str, Any], fragment: str) -> None:
    raw = {"flows": [{"name": "hello", "entrypoint": "flows/example.py:hello", **entry}]}
    with pytest.raises(ManifestError) as exc:
        deployer.parse_manifest(raw, source="m.toml")
    assert fragment in str(exc.value)
    assert "nothing was deployed" in str(exc.value)


def test_every_problem_is_reported_at_once() -> None:
    raw = {"flow": [], "flows": [
        {"name": "a", "entrypoint": "flows/example.py:hello", "cron": "nope"},
        {"name": "a", "entrypoint": "flows/example.py:hello", "cpu": 256, "memory": 9999},
        {"entrypoint": "flows/example.py:hello"},
    ]}
    with pytest.raises(ManifestError) as exc:
        deployer.parse_manifest(raw)
    msg = str(exc.value)
    assert len(exc.value.problems) == 5
    for fragment in ("unknown top-level key(s) ['flow']", "flows[0] (a): cron = 'nope'",
                     "flows[1] (a): cpu = 256, memory = 9999", "name 'a' is already used by flows[0]",
                     "flows[2]: name: required key is missing"):
        assert fragment in msg


@pytest.mark.parametrize(("entrypoint", "params", "fragment"), [
    ("flows/nope.py:hello", {}, "file flows/nope.py does not exist"),
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
    assert "flows[1] (bad)" in str(exc.value) and fragment in str(exc.value)
    assert len(exc.value.problems) == 1


def test_import_errors_are_reported(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(ManifestError, match="importing flows/broken.py failed: ModuleNotFoundError"):
        deployer.load_flows([spec(entrypoint="flows/broken.py:hello")], root=tmp_path)


# --- what gets deployed (pure) ----------------------------------------------------------

def plan(cfg: Any, t: str, *specs_: deployer.FlowSpec, tag: str = TAG) -> list[deployer.PlannedDeployment]:
    specs_ = specs_ or (spec(cron="0 6 * * *", cpu=512, memory=1024),)
    return deployer.plan_deployments(list(specs_), {s.name: "hello" for s in specs_}, cfg, t, tag)


@pytest.fixture
def cfg(config_path: Path) -> Any:
    return load_config(config_path)


@pytest.mark.parametrize(("t", "pool", "registry", "scheduled"), [
    ("main", f"{PREFIX}-main", PROD_REGISTRY, True),
    ("staging", f"{PREFIX}-staging", PROD_REGISTRY, False),
    ("dev", f"{PREFIX}-dev", DEV_REGISTRY, False),
])
def test_plan_per_type(cfg, t: str, pool: str, registry: str, scheduled: bool) -> None:
    [p] = plan(cfg, t)
    assert p.name == f"hello-{t}" and p.full_name == f"hello/hello-{t}"
    assert p.work_pool == pool
    assert p.image == f"{registry}/{PREFIX}:{TAG}"
    assert p.job_variables == {"image": p.image, "cpu": 512, "memory": 1024}
    assert (p.cron, p.timezone) == (("0 6 * * *", "UTC") if scheduled else (None, None))
    assert f"deployment-type:{t}" in p.tags
    assert p.version == TAG
    assert p.path == deployer.IMAGE_WORKDIR
    assert p.pull_steps == ({"prefect.deployments.steps.set_working_directory":
                             {"directory": deployer.IMAGE_WORKDIR}},)


def test_plan_without_resources_uses_pool_defaults_and_types_filter(cfg) -> None:
    a = spec(name="a")
    b = spec(name="b", deployment_types=["main"])
    assert [p.spec_name for p in plan(cfg, "staging", a, b)] == ["a"]
    main_plans = plan(cfg, "main", a, b)
    assert [p.spec_name for p in main_plans] == ["a", "b"]
    assert all(set(p.job_variables) == {"image"} for p in main_plans)


def test_plan_follows_a_custom_agent_repository_and_rejects_bad_tags(config_path) -> None:
    custom = load_config(config_path, {"agent": {"image_repository": "registry.example.com/team/agent"}})
    [p] = plan(custom, "main")
    assert p.image == f"registry.example.com/team/agent:{TAG}"
    with pytest.raises(DeployError, match="not a valid tag"):
        plan(custom, "main", tag="-bad tag")


@pytest.mark.parametrize("prefix", ["prefect-flows", "Prefect-x", "prefectflows"])
def test_pool_names_prefect_reserves_are_refused_before_deploying(cfg, prefix: str) -> None:
    # infra.toml's validation rejects such a prefix too; this is the deployer's own guard
    # (it checks the pool names it will use, whatever names.py makes of the prefix).
    reserved = cfg.model_copy(update={"prefix": prefix})
    with pytest.raises(DeployError, match="reserves work pool names starting with 'prefect'"):
        plan(reserved, "main")


def test_repository_prefix_gives_usable_work_pool_names() -> None:
    """infra.toml's prefix names the work pools; the Prefect API refuses to create pools
    whose name starts with 'prefect' (HTTP 403 from the server)."""
    from infra_tasks.names import Account

    cfg = load_config(ROOT / "infra.toml")
    for name, env in cfg.environments.items():
        for d in Account(cfg, name, env.account_id, cfg.region).deployments:
            assert deployer.pool_name_error(d.pool) is None, deployer.pool_name_error(d.pool)


# --- deploying against a Prefect server ----------------------------------------------------



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


def test_main_deploys_to_main_pool_with_image_resources_and_schedule(deploy, server, tmp_path, capsys) -> None:
    m = manifest(tmp_path, HELLO)
    assert deploy("--branch", "main-v2", "--manifest", str(m), "--image-tag", TAG) == 0
    d = read("hello/hello-main")
    assert d.work_pool_name == f"{PREFIX}-main"
    assert d.job_variables == {"image": f"{PROD_REGISTRY}/{PREFIX}:{TAG}", "cpu": 512, "memory": 1024}
    assert d.entrypoint == "flows/example.py:hello"
    assert d.path == deployer.IMAGE_WORKDIR
    assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                             {"directory": deployer.IMAGE_WORKDIR}}]
    assert d.parameters == {"name": "tests"}
    assert d.version == TAG
    assert set(d.tags) == {"example", "deployment-type:main", deployer.MANIFEST_TAG}
    assert d.enforce_parameter_schema is True
    assert d.parameter_openapi_schema["properties"]["name"]["maxLength"] == 100
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules] == [
        ("0 6 * * 1-5", "Europe/Berlin", True)]
    assert [x.name for x in deployments_in(server)] == ["hello-main"]
    assert "Deployed 1 flow deployment(s)" in capsys.readouterr().out


def test_staging_deploys_without_schedule(deploy, server, tmp_path) -> None:
    m = manifest(tmp_path, HELLO)
    assert deploy("--branch", "staging-v2", "--manifest", str(m), "--image-tag", TAG) == 0
    d = read("hello/hello-staging")
    assert d.work_pool_name == f"{PREFIX}-staging"
    assert d.job_variables["image"] == f"{PROD_REGISTRY}/{PREFIX}:{TAG}"
    assert d.schedules == []
    assert [x.name for x in deployments_in(server)] == ["hello-staging"]


def test_redeploy_updates_in_place_and_replaces_the_schedule(deploy, server, tmp_path, capsys) -> None:
    first = manifest(tmp_path, HELLO)
    assert deploy("--branch", "main-v2", "--manifest", str(first), "--image-tag", TAG) == 0
    before = read("hello/hello-main")
    changed = tmp_path / "changed.toml"
    changed.write_text(textwrap.dedent(HELLO).replace("0 6 * * 1-5", "30 2 * * *").replace("cpu = 512", "cpu = 256"))
    assert deploy("--branch", "main-v2", "--manifest", str(changed), "--image-tag", "prefect-agent-def5678") == 0
    after = read("hello/hello-main")
    assert after.id == before.id
    assert [s.schedule.cron for s in after.schedules] == ["30 2 * * *"]
    assert after.job_variables["cpu"] == 256 and after.job_variables["image"].endswith(":prefect-agent-def5678")
    unscheduled = tmp_path / "unscheduled.toml"
    unscheduled.write_text("\n".join(line for line in textwrap.dedent(HELLO).splitlines()
                                     if not line.startswith(("cron", "timezone"))))
    assert deploy("--branch", "main-v2", "--manifest", str(unscheduled), "--image-tag", TAG) == 0
    assert read("hello/hello-main").schedules == []
    assert len(deployments_in(server)) == 1


def test_deployments_missing_from_the_manifest_are_reported_not_deleted(deploy, server, tmp_path, capsys) -> None:
    from prefect.client.orchestration import get_client

    two = manifest(tmp_path, HELLO + '\n[[flows]]\nname = "hello2"\nentrypoint = "flows/example.py:hello"\n')
    assert deploy("--branch", "main-v2", "--manifest", str(two), "--image-tag", TAG) == 0
    # A deployment someone else made in the same pool (e.g. bootstrap's drift check).
    with get_client(sync_client=True) as client:
        client.create_deployment(flow_id=client.create_flow_from_name("drift-check"), name="drift-check",
                                 work_pool_name=f"{PREFIX}-main", entrypoint="flows/drift.py:check")
    one = tmp_path / "one.toml"
    one.write_text(textwrap.dedent(HELLO))
    capsys.readouterr()
    assert deploy("--branch", "main-v2", "--manifest", str(one), "--image-tag", TAG) == 0
    err = capsys.readouterr().err
    assert "hello/hello2-main" in err and "drift-check" not in err
    assert sorted(x.name for x in deployments_in(server)) == ["drift-check", "hello-main", "hello2-main"]


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
    assert "no Prefect API is configured" in capsys.readouterr().err


BAD_MANIFESTS = {
    "unknown entrypoint": ('entrypoint = "flows/example.py:hello"', 'entrypoint = "flows/missing.py:hello"',
                           "file flows/missing.py does not exist"),
    "missing function": ('entrypoint = "flows/example.py:hello"', 'entrypoint = "flows/example.py:nope"',
                         "has no function 'nope'"),
    "not a flow": ('entrypoint = "flows/example.py:hello"', 'entrypoint = "flows/example.py:format_greeting"',
                   "is not a Prefect flow"),
    "bad cron": ('cron = "0 6 * * 1-5"', 'cron = "0 25 * * *"', "cron = '0 25 * * *'"),
    "invalid cpu/memory": ("memory = 1024", "memory = 512", "cpu = 512, memory = 512: Fargate does not accept"),
    "unknown key": ("tags = [", "retries = 3\ntags = [", "retries: unknown key"),
    "bad parameter": ('parameters = { name = "tests" }', 'parameters = { name = "tests", loud = true }',
                      "parameters = {'name': 'tests', 'loud': True}"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_deploys_nothing(deploy, server, tmp_path, capsys, case: str) -> None:
    old, new, fragment = BAD_MANIFESTS[case]
    good = '\n[[flows]]\nname = "fine"\nentrypoint = "flows/example.py:hello"\n'
    text = textwrap.dedent(HELLO)
    assert old in text
    # The broken flow comes second: the valid one before it must not be deployed either.
    m = manifest(tmp_path, good + text.replace(old, new))
    assert deploy("--branch", "main-v2", "--manifest", str(m), "--image-tag", TAG) == 1
    err = capsys.readouterr().err
    assert "(hello)" in err and fragment in err and "nothing was deployed" in err
    assert deployments_in(server) == []


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


def test_example_flow_runs(prefect_api) -> None:
    from flows.example import format_greeting, hello

    assert format_greeting("  data   team ", excited=True) == "Hello, data team!"
    assert format_greeting("") == "Hello, world."
    assert hello(name="pipeline") == "Hello, pipeline."
