"""The CircleCI pipeline (.circleci/config.yml), read as data: schema, parameters that
copy infra.toml, which jobs run on which branch and in what order, which role each job
assumes — and the trickiest shell steps executed with stub `aws`, `docker` and `./dev`."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.flows import BRANCH_TYPES
from infra_tasks.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".circleci" / "config.yml"
SHA = "abcdef1234567890abcdef1234567890abcdef12"
SHA7 = SHA[:7]

ALWAYS = {"test", "validate-flows", "plan-dev", "plan-production", "build-image"}
DEV_CHAIN = ["apply-dev-base", "push-image-dev", "apply-dev"]
PROD_CHAIN = ["apply-production-base", "push-image-production", "apply-production", "deploy-flows-main"]
STAGING_CHAIN = ["push-image-staging", "deploy-flows-staging"]


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


@pytest.fixture(scope="module")
def infra() -> Any:
    return load_config(ROOT / "infra.toml")


# --- reading the config: workflow entries, parameters, expanded steps -------------------------

def entries(ci: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Workflow job name -> (job, the entry's arguments)."""
    out = {}
    for item in ci["workflows"]["pipeline"]["jobs"]:
        job, args = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        args = args or {}
        out[args.get("name", job)] = (job, args)
    return out


def runs_on(args: dict[str, Any], branch: str) -> bool:
    branches = (args.get("filters") or {}).get("branches") or {}
    only, ignore = branches.get("only"), branches.get("ignore")
    only = [only] if isinstance(only, str) else only
    ignore = [ignore] if isinstance(ignore, str) else ignore
    return (only is None or branch in only) and not (ignore and branch in ignore)


def jobs_on(ci: dict[str, Any], branch: str) -> set[str]:
    return {name for name, (_, args) in entries(ci).items() if runs_on(args, branch)}


def ancestors(ci: dict[str, Any], name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(entries(ci)[name][1].get("requires", []))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(entries(ci)[n][1].get("requires", []))
    return seen


PARAM_RE = re.compile(r"<<\s*([\w.-]+)\s*>>")


def render(value: Any, params: dict[str, Any], pipeline: dict[str, Any]) -> Any:
    """CircleCI's parameter substitution; an unknown reference is a test failure."""
    if isinstance(value, dict):
        return {k: render(v, params, pipeline) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, params, pipeline) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.startswith("parameters."):
            key = ref.removeprefix("parameters.")
            assert key in params, f"unknown parameter {ref} (have {sorted(params)})"
            return str(params[key])
        if ref.startswith("pipeline.parameters."):
            return str(pipeline[ref.removeprefix("pipeline.parameters.")])
        assert ref in ("pipeline.project.slug", "pipeline.git.revision"), f"unknown reference {ref}"
        return "gh/example/repo"

    # `\<<` is CircleCI's escape for a literal `<<` (heredocs, here-strings).
    parts = value.split("\\<<")
    return "<<".join(PARAM_RE.sub(sub, p) for p in parts)


def defaults(decl: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v["default"] for k, v in (decl or {}).items() if "default" in v}


def expand(ci: dict[str, Any], steps: list[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Steps with commands inlined, `when` evaluated and parameters substituted."""
    pipeline = defaults(ci.get("parameters"))
    out: list[dict[str, Any]] = []
    for step in steps:
        name, args = (step, {}) if isinstance(step, str) else next(iter(step.items()))
        if name == "run":
            run = {"command": args} if isinstance(args, str) else dict(args)
            out.append({"run": render(run, params, pipeline)})
        elif name == "when":
            a, b = render(args["condition"]["equal"], params, pipeline)
            if a == b:
                out.extend(expand(ci, args["steps"], params))
        elif name in ci.get("commands", {}):
            cmd = ci["commands"][name]
            declared = cmd.get("parameters") or {}
            given = render(args or {}, params, pipeline)
            assert set(given) <= set(declared), f"{name}: unknown arguments {set(given) - set(declared)}"
            for key, decl in declared.items():
                if decl.get("type") == "enum" and key in given:
                    assert given[key] in decl["enum"], f"{name}.{key}={given[key]!r} not in {decl['enum']}"
            out.extend(expand(ci, cmd["steps"], {**defaults(declared), **given}))
            out.append({"used-command": {"name": name, **{**defaults(declared), **given}}})
        else:
            out.append({name: render(args, params, pipeline)})
    return out


def job_view(ci: dict[str, Any], name: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(job definition, expanded steps, job parameters) of a workflow entry."""
    job, args = entries(ci)[name]
    definition = ci["jobs"][job]
    declared = definition.get("parameters") or {}
    known = {"name", "requires", "filters", "context", "serial-group", "matrix", "type", "pre-steps", "post-steps"}
    params = {**defaults(declared), **{k: v for k, v in args.items() if k not in known}}
    assert set(params) == set(declared), f"{name}: parameters {set(params) ^ set(declared)} missing or unknown"
    pipeline = defaults(ci.get("parameters"))
    params = render(params, params, pipeline)
    return definition, expand(ci, definition["steps"], params), params


def roles(ci: dict[str, Any], name: str) -> list[tuple[str, str]]:
    _, steps, _ = job_view(ci, name)
    return [(s["used-command"]["account-id"], s["used-command"]["role"]) for s in steps
            if "used-command" in s and s["used-command"]["name"] == "assume-role"]


def commands(ci: dict[str, Any], name: str) -> str:
    _, steps, _ = job_view(ci, name)
    return "\n".join(s["run"]["command"] for s in steps if "run" in s)


def run_step(ci: dict[str, Any], job: str, step_name: str) -> dict[str, Any]:
    definition, steps, params = job_view(ci, job)
    [run] = [s["run"] for s in steps if "run" in s and s["run"].get("name", "").startswith(step_name)]
    pipeline = defaults(ci.get("parameters"))
    env = {k: str(v) for k, v in render(definition.get("environment") or {}, params, pipeline).items()}
    return {**run, "job_environment": {**env, **{k: str(v) for k, v in (run.get("environment") or {}).items()}}}


# --- schema and consistency with infra.toml ---------------------------------------------------

def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    return subprocess.run([exe, "--builtin-schema", "vendor.circle-ci", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_config_is_valid_circleci(tmp_path: Path) -> None:
    ok = check_jsonschema(CONFIG)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The check is not vacuous: a misspelt key fails it.
    broken = tmp_path / "config.yml"
    broken.write_text(CONFIG.read_text().replace("    executor: docker-host\n", "    executr: docker-host\n", 1))
    assert check_jsonschema(broken).returncode != 0


def test_pipeline_parameters_match_infra_toml(ci, infra) -> None:
    p = defaults(ci["parameters"])
    assert p["prefix"] == infra.prefix
    assert p["aws-region"] == infra.region
    assert p["dev-account-id"] == infra.env("dev").account_id
    assert p["production-account-id"] == infra.env("production").account_id


def test_every_reference_resolves(ci) -> None:
    names = entries(ci)
    for name, (job, args) in names.items():
        assert job in ci["jobs"], f"{name}: no job {job!r}"
        for req in args.get("requires", []):
            assert req in names, f"{name} requires unknown job {req!r}"
        job_view(ci, name)  # every << parameter >> and command argument resolves


# --- branches and order --------------------------------------------------------------------

@pytest.mark.parametrize(("branch", "extra"), [
    ("feature/new-flow", []),
    ("pull/123", []),
    ("main", []),
    ("dev-v2", DEV_CHAIN),
    ("staging-v2", STAGING_CHAIN),
    ("main-v2", PROD_CHAIN),
])
def test_jobs_per_branch(ci, branch: str, extra: list[str]) -> None:
    assert jobs_on(ci, branch) == ALWAYS | set(extra)


@pytest.mark.parametrize("branch", ["feature/x", "dev-v2", "staging-v2", "main-v2"])
def test_every_required_job_runs_on_the_same_branch(ci, branch: str) -> None:
    # A job whose requirement is filtered out never runs: the chain would stall silently.
    on = jobs_on(ci, branch)
    for name in on:
        missing = set(entries(ci)[name][1].get("requires", [])) - on
        assert not missing, f"on {branch}, {name} requires {missing}, which do not run there"


@pytest.mark.parametrize("chain", [DEV_CHAIN, PROD_CHAIN, STAGING_CHAIN])
def test_deploy_chains_run_in_order(ci, chain: list[str]) -> None:
    for earlier, later in zip(chain, chain[1:]):
        assert earlier in ancestors(ci, later), f"{later} must wait for {earlier}"


@pytest.mark.parametrize("name", DEV_CHAIN + PROD_CHAIN + STAGING_CHAIN)
def test_nothing_deploys_before_tests_validation_and_image_build_pass(ci, name: str) -> None:
    assert {"test", "validate-flows", "build-image"} <= ancestors(ci, name)


@pytest.mark.parametrize(("name", "plan"), [("apply-dev-base", "plan-dev"),
                                            ("apply-production-base", "plan-production")])
def test_applies_wait_for_their_plan(ci, name: str, plan: str) -> None:
    assert plan in ancestors(ci, name)


def test_base_apply_keeps_the_agent_image_and_full_apply_uses_the_commit(ci) -> None:
    for env in ("dev", "production"):
        assert job_view(ci, f"apply-{env}-base")[2]["agent-tag"] == "current"
        assert job_view(ci, f"apply-{env}")[2]["agent-tag"] == "commit"
        assert job_view(ci, f"apply-{env}")[2]["env"] == env


@pytest.mark.parametrize(("name", "branch"), [("deploy-flows-main", "main-v2"),
                                              ("deploy-flows-staging", "staging-v2")])
def test_flow_deployments_follow_the_branch_mapping(ci, name: str, branch: str) -> None:
    assert {b for b in ("dev-v2", "staging-v2", "main-v2", "feature/x") if runs_on(entries(ci)[name][1], b)} == {
        branch}
    assert name.removeprefix("deploy-flows-") == BRANCH_TYPES[branch]
    cmd = commands(ci, name)
    assert re.search(r'python -m deployments\.flows --branch "\$CIRCLE_BRANCH"\s+\\?\s*--image-tag '
                     r'"prefect-agent-\$\{CIRCLE_SHA1:0:7\}"', cmd), cmd
    # The flows run in the image pushed by the same pipeline.
    push = "push-image-production" if branch == "main-v2" else "push-image-staging"
    assert push in ancestors(ci, name)
    assert "prefect-production" in entries(ci)[name][1]["context"]


def test_concurrent_pipelines_do_not_interleave_applies(ci) -> None:
    groups = {name: entries(ci)[name][1].get("serial-group") for name in DEV_CHAIN + PROD_CHAIN[:3]}
    assert all(groups.values())
    assert len({groups[n] for n in DEV_CHAIN}) == 1 and len({groups[n] for n in PROD_CHAIN[:3]}) == 1
    assert groups["apply-dev"] != groups["apply-production"]


# --- AWS access: OIDC roles only -------------------------------------------------------------

def test_roles_per_job(ci, infra) -> None:
    accounts = {env.account_id: name for name, env in infra.environments.items()}
    for name in entries(ci):
        assumed = roles(ci, name)
        every_branch = runs_on(entries(ci)[name][1], "feature/any")
        if name.startswith("plan-"):
            assert assumed == [(infra.env(name.removeprefix("plan-")).account_id, "ci-plan")]
        for account, role in assumed:
            assert account in accounts, f"{name}: account {account} is not in infra.toml"
            if role in ("ci-deploy", "ci-push"):
                assert not every_branch, f"{name} assumes {role} on every branch"
                env = infra.env(accounts[account])
                branches = {b for b in ("dev-v2", "staging-v2", "main-v2") if runs_on(entries(ci)[name][1], b)}
                # The role's trust policy admits only these branches: the job would fail elsewhere.
                allowed = {env.apply_branch} if role == "ci-deploy" else set(env.ci_branches)
                assert branches <= allowed, f"{name}: {role} on {branches}, trusted on {allowed}"
        if assumed:
            assert entries(ci)[name][1].get("context"), f"{name} needs a context for its OIDC token"


def test_contexts_give_write_credentials_only_to_deploy_branches(ci, infra) -> None:
    expected = {
        "plan-dev": ["prefect-dev-read"], "plan-production": ["prefect-production-read"],
        "apply-dev-base": ["prefect-dev"], "apply-dev": ["prefect-dev"],
        "apply-production-base": ["prefect-production"], "apply-production": ["prefect-production"],
        "deploy-flows-main": ["prefect-production"], "deploy-flows-staging": ["prefect-production"],
        "push-image-dev": ["aws-oidc"], "push-image-production": ["aws-oidc"], "push-image-staging": ["aws-oidc"],
    }
    actual = {name: args.get("context") for name, (_, args) in entries(ci).items() if args.get("context")}
    assert actual == expected
    for name, contexts in actual.items():
        for context in contexts:
            if context.startswith("prefect-") and not context.endswith("-read"):
                env = infra.env(context.removeprefix("prefect-"))
                branches = {b for b in ("dev-v2", "staging-v2", "main-v2", "feature/x")
                            if runs_on(entries(ci)[name][1], b)}
                assert branches <= set(env.ci_branches), f"{name} gets {context} on {branches}"


@pytest.mark.parametrize(("name", "role", "env"), [
    ("apply-dev-base", "ci-deploy", "dev"), ("push-image-dev", "ci-push", "dev"), ("apply-dev", "ci-deploy", "dev"),
    ("apply-production-base", "ci-deploy", "production"), ("push-image-production", "ci-push", "production"),
    ("apply-production", "ci-deploy", "production"), ("push-image-staging", "ci-push", "production"),
])
def test_deploy_jobs_assume_the_deploy_role_of_their_account(ci, infra, name: str, role: str, env: str) -> None:
    assert roles(ci, name) == [(infra.env(env).account_id, role)]


def test_jobs_that_touch_aws_assume_a_role_first(ci) -> None:
    for name in entries(ci):
        _, steps, _ = job_view(ci, name)
        assumed = False
        for s in steps:
            if "used-command" in s and s["used-command"]["name"] == "assume-role":
                assumed = True
            cmd = s.get("run", {}).get("command", "")
            if re.search(r"\baws (ecr|ecs|s3|iam)\b|flows\.bootstrap|boto3", cmd):
                assert assumed, f"{name}: step {s['run'].get('name')!r} uses AWS before assuming a role"


def test_no_long_lived_aws_keys(ci) -> None:
    text = CONFIG.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{12,}", text)

    def keys(node: Any) -> set[str]:
        if isinstance(node, dict):
            return {str(k).lower() for k in node} | set().union(*(keys(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(set(), *(keys(v) for v in node))
        return set()
    # e.g. an image's `aws_auth` with stored keys
    assert not keys(ci) & {"aws_access_key_id", "aws_secret_access_key", "aws_auth"}
    assume = ci["commands"]["assume-role"]["steps"][0]["run"]["command"]
    assert "assume-role-with-web-identity" in assume and '--web-identity-token "$CIRCLE_OIDC_TOKEN_V2"' in assume
    # The only credentials written are the ones STS just returned.
    for line in text.splitlines():
        if "AWS_ACCESS_KEY_ID" in line or "AWS_SECRET_ACCESS_KEY" in line:
            assert "$key_id" in line or "$secret_key" in line, line


# --- installs: from the lock only ---------------------------------------------------------------

def values_of(node: Any, key: str) -> list[Any]:
    """Every value under `key`, anywhere in the config."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == key] + [x for v in node.values() for x in values_of(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in values_of(v, key)]
    return []


def test_pip_caches_are_keyed_on_the_lock(ci) -> None:
    restores, saves = values_of(ci, "restore_cache"), values_of(ci, "save_cache")
    assert restores and len(restores) == len(saves)
    exact = 'pip-v2-{{ arch }}-{{ checksum "requirements/dev.txt" }}'
    assert (ROOT / "requirements" / "dev.txt").is_file()
    for restore in restores:
        assert restore["keys"][0] == exact, restore
    for save in saves:
        assert save["key"] == exact and save["paths"] == ["~/.cache/pip"], save


def test_the_project_is_installed_only_from_the_lock(ci) -> None:
    """Jobs get the project through ./dev (or .ci/run, which calls it): a virtualenv of
    requirements/dev.txt, hashes checked. The one other pip install is the AWS CLI's,
    pinned and in a virtualenv of its own."""
    installs = [line.strip() for command in values_of(ci, "command")
                for line in str(command).splitlines() if re.search(r"\bpip3?\"?\s+install\b", line)]
    assert installs and all("awscli==" in line for line in installs), installs
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert "rm -rf .venv" in ci_run and "./dev test" in ci_run
    dev = (ROOT / "dev").read_text()
    assert '--require-hashes -r "$DEV_LOCK"' in dev and "DEV_LOCK=requirements/dev.txt" in dev
    assert "--no-deps --no-build-isolation -e ." in dev


# --- shell steps executed with stubs ----------------------------------------------------------

def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def bash(command: str, cwd: Path, env: dict[str, str], bin_dir: Path) -> subprocess.CompletedProcess[str]:
    full = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(cwd), "CIRCLE_SHA1": SHA,
            "CIRCLE_BUILD_NUM": "42", "CIRCLE_PROJECT_REPONAME": "repo", **env}
    # CircleCI's default shell for `run` steps.
    return subprocess.run(["/bin/bash", "-eo", "pipefail", "-c", command], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path, Path]:
    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    work.mkdir()
    return bin_dir, work, tmp_path / "calls.log"


@pytest.mark.parametrize(("code", "job_code", "message"), [
    (0, 0, "dev: no changes."),
    (2, 0, "dev: changes pending"),
    (1, 1, "dev: plan failed (exit 1)"),
    (3, 3, "plan failed (exit 3)"),
])
def test_plan_step_treats_exit_2_as_success(ci, sandbox, code: int, job_code: int, message: str) -> None:
    bin_dir, work, log = sandbox
    stub(work, "dev", f"""
        echo "$@" >> {log}
        echo "plan table"
        exit {code}
    """)
    step = run_step(ci, "plan-dev", "Plan dev")
    r = bash(step["command"], work, {"PREFECT_API_URL": "https://api.prefect.example/api"}, bin_dir)
    assert r.returncode == job_code, r.stdout + r.stderr
    assert message in r.stdout + r.stderr
    args = log.read_text()
    assert "sh python -m flows.bootstrap --env dev --plan" in args
    assert f"--set agent.image_tag=prefect-agent-{SHA7}" in args and "--plan-out plans/dev.json" in args
    assert "plan table" in (work / "plans" / "dev.txt").read_text()


def test_plan_step_needs_the_prefect_workspace(ci, sandbox) -> None:
    # Without it bootstrap would plan the Prefect side against an empty local server.
    bin_dir, work, log = sandbox
    stub(work, "dev", f"echo called >> {log}")
    r = bash(run_step(ci, "plan-dev", "Plan dev")["command"], work, {}, bin_dir)
    assert r.returncode != 0 and "prefect-dev-read context" in r.stderr and not log.exists()


AWS_STUB = """
    echo "aws $*" >> {log}
    case "$*" in
      *describe-images*)
        n=$(cat {state} 2>/dev/null || echo 0); echo $((n+1)) > {state}
        case "$MODE:$n" in
          exists:*|race:1) echo "sha256:0123"; exit 0 ;;
          denied:*) echo "An error occurred (AccessDeniedException) when calling DescribeImages" >&2; exit 254 ;;
          *) echo "An error occurred (ImageNotFoundException) when calling DescribeImages" >&2; exit 254 ;;
        esac ;;
      *get-login-password*) echo "password" ;;
    esac
"""
DOCKER_STUB = """
    echo "docker $*" >> {log}
    [ "$1" = login ] && cat > /dev/null
    [ "$1" = push ] && [ "$MODE" = race ] && exit 1
    exit 0
"""


@pytest.mark.parametrize(("mode", "code", "pushed"), [
    ("exists", 0, False),   # the tag is there: immutable, so no build and no push
    ("missing", 0, True),
    ("denied", 1, False),   # cannot tell: fail rather than push blindly
    ("race", 0, True),      # another pipeline pushed the same commit first
])
def test_push_step_skips_existing_tags(ci, sandbox, mode: str, code: int, pushed: bool) -> None:
    bin_dir, work, log = sandbox
    state = work.parent / "state"
    stub(bin_dir, "aws", AWS_STUB.format(log=log, state=state))
    stub(bin_dir, "docker", DOCKER_STUB.format(log=log))
    step = run_step(ci, "push-image-dev", "Push prefect-agent")
    r = bash(step["command"], work, {**step["job_environment"], "MODE": mode}, bin_dir)
    assert r.returncode == code, r.stdout + r.stderr
    calls = log.read_text()
    prefix = defaults(ci["parameters"])["prefix"]
    image = f"111111111111.dkr.ecr.us-east-1.amazonaws.com/{prefix}:prefect-agent-{SHA7}"
    assert (f"aws ecr describe-images --repository-name {prefix} "
            f"--image-ids imageTag=prefect-agent-{SHA7}") in calls
    assert (f"docker push {image}" in calls) is pushed
    if pushed:
        assert "--file docker/agent/Dockerfile --platform linux/amd64" in calls and f"--tag {image}" in calls
        assert "docker login --username AWS --password-stdin 111111111111.dkr.ecr.us-east-1.amazonaws.com" in calls
    else:
        assert "docker build" not in calls


def test_assume_role_step_uses_the_oidc_token(ci, sandbox) -> None:
    bin_dir, work, log = sandbox
    stub(bin_dir, "aws", f"""
        echo "aws $*" >> {log}
        case "$*" in
          *assume-role-with-web-identity*) printf 'ASIAEXAMPLE\\tsecret\\ttoken\\n' ;;
          *get-caller-identity*) echo "arn:aws:sts::111111111111:assumed-role/ci-deploy/s" ;;
        esac
    """)
    prefix = defaults(ci["parameters"])["prefix"]
    step = run_step(ci, "apply-dev", f"Assume {prefix}-ci-deploy")
    bash_env = work / "bash_env"
    env = {**step["job_environment"], "BASH_ENV": str(bash_env), "CIRCLE_OIDC_TOKEN_V2": "jwt.from.circleci"}
    r = bash(step["command"], work, env, bin_dir)
    assert r.returncode == 0, r.stderr
    calls = log.read_text()
    assert ("sts assume-role-with-web-identity --region us-east-1 "
            f"--role-arn arn:aws:iam::111111111111:role/{prefix}-ci-deploy "
            "--role-session-name circleci-repo-42 --web-identity-token jwt.from.circleci") in calls
    exported = bash_env.read_text()
    assert "AWS_ACCESS_KEY_ID='ASIAEXAMPLE'" in exported and "AWS_SESSION_TOKEN='token'" in exported
    # Without a token it stops before calling AWS.
    log.unlink()
    r = bash(step["command"], work, {**env, "CIRCLE_OIDC_TOKEN_V2": ""}, bin_dir)
    assert r.returncode == 1 and "CIRCLE_OIDC_TOKEN_V2 is empty" in r.stderr and not log.exists()


@pytest.mark.parametrize(("job", "tag", "flags"), [("apply-dev", f"prefect-agent-{SHA7}", ""),
                                                   ("apply-dev-base", "prefect-agent-0.0.9", "--no-wait")])
def test_apply_step_passes_the_agent_tag(ci, sandbox, job: str, tag: str, flags: str) -> None:
    bin_dir, work, log = sandbox
    stub(work, "dev", f"""
        echo "$@" >> {log}
    """)
    _, steps, _ = job_view(ci, job)
    export = next(s["run"]["command"] for s in steps
                  if "run" in s and s["run"]["name"].startswith(("Roll the agent", "Keep the agent")))
    bash_env = work / "bash_env"
    if job.endswith("-base"):
        bash_env.write_text(f"export AGENT_TAG='{tag}'\nexport APPLY_FLAGS='--no-wait'\n")
    else:
        bash(export, work, {"BASH_ENV": str(bash_env)}, bin_dir)
    step = run_step(ci, job, "Apply dev")
    prefect = {"PREFECT_API_URL": "https://api.prefect.example/api", "PREFECT_API_KEY": "pnu_x"}
    r = bash(f". {bash_env}\n" + step["command"], work, prefect, bin_dir)
    assert r.returncode == 0, r.stderr
    calls = log.read_text()
    assert f"sh python -m flows.bootstrap --env dev --yes --set agent.image_tag={tag}" in calls
    assert ("--no-wait" in calls) is bool(flags)
    # Bootstrap applies the Prefect side too: never against a throw-away local server.
    log.unlink()
    r = bash(f". {bash_env}\n" + step["command"], work, {"PREFECT_API_URL": prefect["PREFECT_API_URL"]}, bin_dir)
    assert r.returncode != 0 and "prefect-dev context" in r.stderr and not log.exists()


def test_current_agent_tag_is_read_from_the_running_service(ci, aws_env, tmp_path) -> None:
    """The base apply's helper against the emulator: the agent's image tag, or infra.toml's."""
    import boto3

    _, steps, _ = job_view(ci, "apply-dev-base")
    cmd = next(s["run"]["command"] for s in steps if "run" in s and s["run"]["name"].startswith("Keep the agent"))
    script = re.search(r"<<'PY'\n(.*?)\nPY\n", cmd, re.S).group(1)
    (tmp_path / "current_tag.py").write_text(script)

    def current() -> str:
        env = {k: v for k, v in os.environ.items() if k != "INFRA_SANDBOX_ACCOUNT"}
        r = subprocess.run([sys.executable, str(tmp_path / "current_tag.py"), "dev"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    from infra_tasks.ecs_taskdef import WORKER_CONTAINER
    from infra_tasks.names import Account

    cfg = load_config(ROOT / "infra.toml")
    d = Account(cfg, "dev", cfg.env("dev").account_id, cfg.region).deployment("dev")
    assert current() == cfg.agent.image_tag   # no agent yet
    ecs = boto3.client("ecs", region_name=cfg.region, endpoint_url=aws_env)
    ecs.create_cluster(clusterName=d.cluster)
    td = ecs.register_task_definition(family=d.task_family, containerDefinitions=[
        {"name": "sidecar", "memory": 128, "image": "public.ecr.aws/docker/library/busybox:1.36"},
        {"name": WORKER_CONTAINER, "memory": 512, "image": f"{d.account.registry}/{cfg.prefix}:prefect-agent-0ld7a9e"}])
    ecs.create_service(cluster=d.cluster, serviceName=d.service,
                       taskDefinition=td["taskDefinition"]["taskDefinitionArn"], desiredCount=0)
    assert current() == "prefect-agent-0ld7a9e"
