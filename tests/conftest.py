"""Test fixtures: one moto server (HTTP, loopback, free port) and one Prefect test
server per session; the emulator is reset before every test that uses it."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# See prefect_client_retries_soon: more, shorter retries against the SQLite test server.
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "7")
# Keep IAM-propagation retries short in tests; the fault tests set their own bounds.
os.environ.setdefault("INFRA_IAM_PROPAGATION_TIMEOUT", "5")
for var in ("PREFECT_API_KEY", "AWS_PROFILE"):
    os.environ.pop(var, None)

from bench.prefect_api import clean_prefect_api  # noqa: E402
from infra_tasks import aws, emulator  # noqa: E402
from infra_tasks.config import InfraConfig, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
P = "data-flows"  # infra.toml's prefix
PROD_ACCOUNT = "222222222222"
DEV_ACCOUNT = "111111111111"
REGION = "us-east-1"


@pytest.fixture(scope="session", autouse=True)
def emulator_bucket_policy_conditions() -> Iterator[None]:
    """moto applies a bucket policy's statements to object calls without their Condition,
    so the TLS-only Deny every flow bucket has blocks every object call. Patched here (the
    emulator runs in this process), never in the product: the policy is evaluated with its
    conditions, for a request made over TLS as every request to AWS is."""
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import FakeBucket

    from .iam_eval import Request, resource_policy_verdict

    original = FakeBucket.get_permission

    def get_permission(self: Any, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        verdict = resource_policy_verdict(json.loads(self.policy), Request(
            action, resource, {"aws:SecureTransport": "true"}, principal={"AWS": "*"}))
        return {"deny": PermissionResult.DENIED, "allow": PermissionResult.PERMITTED}.get(
            verdict, PermissionResult.NEUTRAL)

    FakeBucket.get_permission = get_permission
    yield
    FakeBucket.get_permission = original


@pytest.fixture(scope="session", autouse=True)
def prefect_client_retries_soon() -> Iterator[None]:
    """The Prefect test server keeps its data in SQLite, which refuses a write that meets
    another one (SQLITE_BUSY_SNAPSHOT, e.g. the server recording task-run events while a
    block is saved) with 503; Prefect's client then waits 2, 4, 8 ... seconds before it
    retries. A cold bootstrap with the Prefect side spent about half its time waiting so.
    Here the client waits a quarter of that (0.5, 1, 2 ... s) and retries up to seven times
    (PREFECT_CLIENT_MAX_RETRIES, above): it gives up after about the same time as Prefect's five
    retries would. A test-harness speed-up only; the product keeps Prefect's backoff."""
    import prefect.client.base as client_base

    original = client_base.clamped_poisson_interval
    client_base.clamped_poisson_interval = lambda average_interval, clamping_factor=0.3: average_interval / 4
    yield
    client_base.clamped_poisson_interval = original


@pytest.fixture(scope="session", autouse=True)
def botocore_models_parsed_once() -> Iterator[None]:
    """Each emulator reset resets our clients, and each new botocore session parses
    botocore's JSON service models again (about 0.1 s a service). Parsed once per process
    here instead (botocore only reads them); a test-harness speed-up only."""
    from botocore.loaders import JSONFileLoader

    original = JSONFileLoader.load_file
    parsed: dict[str, Any] = {}

    def load_file(self: Any, file_path: str) -> Any:
        if file_path not in parsed:
            parsed[file_path] = original(self, file_path)
        return parsed[file_path]

    JSONFileLoader.load_file = load_file
    yield
    JSONFileLoader.load_file = original


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with emulator.moto_server() as url:
        yield url


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory all of this run's xdist workers see (pytest's per-run base directory)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from unittest import mock

    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    from . import prefect_db

    # The test server stores neither events nor task runs (no test reads them back;
    # automations react to the event stream, not the table; a flow run's state comes from
    # its own engine): fewer background writes for ours to collide with in SQLite (503,
    # see prefect_client_retries_soon), and less CPU. Only this server (a setting of this
    # process, not the environment): the sandbox and worker tests start real servers with
    # the defaults. It starts from the run's migrated database (tests/prefect_db.py).
    home = tmp_path_factory.mktemp("prefect-api")
    with contextlib.ExitStack() as stack:
        with prefect_db.seeded(shared_tmp(tmp_path_factory), home / "prefect-test.db") as seeded:
            settings = {prefect.settings.PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED: False,
                        prefect.settings.PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED: False,
                        **{getattr(prefect.settings, k): v for k, v in seeded.items()}}
            stack.enter_context(prefect.settings.temporary_settings(settings))
            # prefect_test_harness keeps its database in a new temporary directory: this one.
            with mock.patch("prefect.testing.utilities.mkdtemp", return_value=str(home)):
                stack.enter_context(prefect_test_harness(server_startup_timeout=120))
        yield


def clean_prefect() -> None:
    """Delete what a bootstrap registers, so each test starts from an empty Prefect API
    as well as an empty emulator (one test server is shared by the session)."""
    PREFECT_CLEANS[0] += 1
    clean_prefect_api()


@pytest.fixture
def prefect_clean(prefect_api: None) -> None:
    clean_prefect()


RESETS = [0]  # emulator resets in this process (see counted_resets)
PREFECT_CLEANS = [0]  # clean_prefect() calls in this process
_WARM: dict[str, Any] = {"key": None, "pristine": True}


@pytest.fixture(scope="session", autouse=True)
def counted_resets() -> Iterator[None]:
    """Count every reset of the emulator, so a warm stack knows when it was wiped."""
    original = emulator.reset

    def reset(endpoint: str) -> None:
        RESETS[0] += 1
        original(endpoint)

    emulator.reset = reset
    yield
    emulator.reset = original


@contextlib.contextmanager
def _shared_stack(moto_url: str, pristine: bool, prefect: bool = False) -> Iterator[Callable[[str], Any]]:
    flags = () if prefect else ("--no-prefect",)
    key = (RESETS[0], PREFECT_CLEANS[0] if prefect else None)
    with emulator.sandbox_env(moto_url, PROD_ACCOUNT, REGION):
        if _WARM.get("key") != key or _WARM.get("prefect") != prefect or (pristine and not _WARM["pristine"]):
            emulator.reset(moto_url)
            clean_prefect()
            assert run_cli("--env", "production", "--yes", *flags) == 0
            _WARM.update(key=(RESETS[0], PREFECT_CLEANS[0] if prefect else None), prefect=prefect, pristine=True)
        _WARM["pristine"] = _WARM["pristine"] and pristine
        aws.CALLS.reset()
        yield boto_maker(moto_url)
        aws.CALLS.reset()
        clean = run_cli("--env", "production", "--plan", *flags) == 0 and not aws.CALLS.mutating()
        if not clean:
            _WARM["key"] = None


@pytest.fixture
def warm_stack(moto_url: str, prefect_api: None) -> Iterator[Callable[[str], Any]]:
    """The production stack (AWS side) as a cold bootstrap leaves it, built once and
    shared by tests that only read it. After each, a plan must be empty (zero mutating
    calls), else the next user rebuilds it from an empty account."""
    with _shared_stack(moto_url, pristine=True) as boto:
        yield boto


@pytest.fixture
def repaired_stack(moto_url: str, prefect_api: None) -> Iterator[Callable[[str], Any]]:
    """The same stack shared by tests that change it and repair it (the drift cases):
    each starts from what the last one repaired, which plans empty but is no longer as a
    cold bootstrap leaves it (e.g. more task-definition revisions), so `warm_stack` users
    get a fresh one after them."""
    with _shared_stack(moto_url, pristine=False) as boto:
        yield boto


@pytest.fixture
def warm_prefect_stack(moto_url: str, prefect_api: None) -> Iterator[Callable[[str], Any]]:
    """`warm_stack` with the Prefect side (pools, blocks, deployments, lock), for tests
    that read it or change nothing (a rejected or invalid update)."""
    with _shared_stack(moto_url, pristine=True, prefect=True) as boto:
        yield boto


@pytest.fixture
def prefect_stack(bootstrap: Callable[..., int], boto: Callable[[str], Any]) -> Callable[[str], Any]:
    """A fresh production stack with the Prefect side, for tests that leave it changed;
    yields raw boto3 clients on it."""
    assert bootstrap("--yes", prefect=True) == 0
    return boto


@pytest.fixture
def aws_env(moto_url: str) -> Iterator[str]:
    """A clean emulator acting as the production account."""
    emulator.reset(moto_url)
    with emulator.sandbox_env(moto_url, PROD_ACCOUNT, REGION):
        aws.CALLS.reset()
        yield moto_url


@pytest.fixture
def dev_account(moto_url: str, prefect_clean: None) -> Iterator[Callable[[str], Any]]:
    """A clean emulator acting as the dev account; yields raw boto3 clients on it."""
    emulator.reset(moto_url)
    os.environ.pop("INFRA_ROTATE_CREDENTIALS", None)
    with emulator.sandbox_env(moto_url, DEV_ACCOUNT, "us-east-1"):
        aws.CALLS.reset()
        yield boto_maker(moto_url)


@pytest.fixture
def cfg() -> InfraConfig:
    return load_config(ROOT / "infra.toml")


@pytest.fixture
def boto(aws_env: str) -> Callable[[str], Any]:
    """Raw boto3 clients on the emulator, for asserting state and making out-of-band
    changes (not counted as our calls)."""
    return boto_maker(aws_env)


def boto_maker(url: str) -> Callable[[str], Any]:
    import boto3

    session = boto3.Session()
    made: dict[str, Any] = {}

    def make(service: str) -> Any:
        # One client per service (creating one costs more than most calls made with it).
        if service not in made:
            c = session.client(service, region_name=REGION, endpoint_url=url)
            c.meta.events.register("before-sign", emulator_account_header)
            made[service] = c
        return made[service]
    return make


def emulator_account_header(request: Any = None, **_: Any) -> None:
    request.headers["x-moto-account-id"] = os.environ.get("INFRA_SANDBOX_ACCOUNT", PROD_ACCOUNT)


def run_cli(*argv: str) -> int:
    from flows.bootstrap import main

    return main(list(argv))


@pytest.fixture
def bootstrap(aws_env: str, prefect_clean: None) -> Callable[..., int]:
    """Run `python -m flows.bootstrap` in-process against the emulator. AWS-only
    (`--no-prefect`) unless `prefect=True`: the Prefect side has its own tests, and
    registering it costs seconds per run on the shared test server."""
    def run(*extra: str, env: str = "production", prefect: bool = False) -> int:
        return run_cli("--env", env, *extra, *(() if prefect else ("--no-prefect",)))
    return run


def policy_doc(raw: Any) -> dict[str, Any]:
    """A policy as AWS returned it, with one-item lists shown as their item (so tests
    read naturally whichever equivalent form was written)."""
    return flat(json.loads(raw) if isinstance(raw, str) else raw)


def flat(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (flat(v) if k != "Statement" else [flat(x) for x in (v if isinstance(v, list) else [v])])
                for k, v in value.items()}
    if isinstance(value, list):
        return flat(value[0]) if len(value) == 1 else [flat(v) for v in value]
    return value


@pytest.fixture(scope="session")
def worker_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real prefect-aws ECS worker launching every deployment of every pool, once per
    session (see tests/worker_harness.py `run_scenario`); plain data."""
    from .worker_harness import run_scenario

    return run_scenario(tmp_path_factory.mktemp("worker-runtime"), shared=shared_tmp(tmp_path_factory))


@pytest.fixture(scope="session")
def worker_calls(worker_run: Any) -> list[dict[str, Any]]:
    """Every AWS call the real ECS workers made, for IAM evaluation."""
    return worker_run.calls


# Files in the order they are handed to the xdist workers (`--dist loadfile` with
# `--no-loadscope-reorder`): the longest first, so that no worker starts a long file when
# the others are nearly done. The rest follow in their usual order. Re-rank from the
# durations CI prints when the suite's shape changes.
SLOW_FIRST = (
    "test_sandbox.py", "test_worker_runtime.py", "test_teardown.py", "test_prune_ui.py", "test_drift.py",
    "test_crash_recovery.py", "test_prefect_side.py",
    "test_faults.py", "test_prefect_drift_update.py", "test_crash_recovery_prefect.py", "test_bootstrap.py",
    "test_alerts.py", "test_pipeline_deploy.py", "test_iam_runtime.py", "test_iam_requests.py",
)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """The run's Prefect database template, made in the background by the first process
    (the xdist controller, or the only process) while the workers start."""
    if hasattr(config, "workerinput"):
        return
    from . import prefect_db

    config.stash[_TEMPLATE_BUILDER] = prefect_db.start_building(config._tmp_path_factory.getbasetemp())  # noqa: SLF001


def pytest_unconfigure(config: pytest.Config) -> None:
    builder = config.stash.get(_TEMPLATE_BUILDER, None)
    if builder is not None and builder.poll() is None:  # a run shorter than the build
        builder.kill()
        builder.wait()


_TEMPLATE_BUILDER = pytest.StashKey["Any"]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
