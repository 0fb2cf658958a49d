"""Bad configuration fails with the key path, the value and what is allowed — before
any AWS call."""

from __future__ import annotations

import copy
import tomllib

import pytest

from infra_tasks import aws
from infra_tasks.config import ConfigError, bucket_name_error, fargate_pair_error, parse_config

from .conftest import ROOT, run_cli

RAW = tomllib.loads((ROOT / "infra.toml").read_text())


def with_value(path: str, value: object) -> dict:
    raw = copy.deepcopy(RAW)
    node = raw
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    if value is KeyError:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return raw


BAD = [
    ("agent.cpu", 1000, ["agent", "cpu 1000", "256, 512, 1024"]),
    ("agent.memory", 1024, ["agent", "cpu 1024 with memory 1024", "2048..8192"]),
    ("flows.memory", 99999, ["flows", "memory 99999"]),
    ("logs.retention_days", 31, ["logs.retention_days", "31", "1, 3, 5, 7, 14, 30"]),
    ("environments.dev.account_id", "12345", ["environments.dev.account_id", "'12345'", "12 digits"]),
    ("environments.production.account_id", 222222222222, ["environments.production.account_id"]),
    ("prefix", "Bad_Prefix", ["prefix", "'Bad_Prefix'", "a-z"]),
    ("prefix", "xn--abc", ["prefix", "--"]),
    ("prefix", "sthree-x", ["bucket name", "sthree-"]),
    ("prefix", "prefect-x", ["prefix", "reserves pool names"]),
    ("region", "mars-1", ["region", "'mars-1'"]),
    ("agent.desired_count", 5, ["desired_count 5", "1..2"]),
    ("agent.min_count", 3, ["min_count 3", "max_count 2"]),
    ("bogus", 1, ["bogus", "unknown key"]),
    ("agent.cpuu", 1, ["agent.cpuu", "unknown key"]),
    ("environments.dev.deployment_types", ["qa"], ["environments.dev.deployment_types.0", "'qa'", "'dev'"]),
    ("environments.dev.deployment_types", ["main"], ["deployment type 'main'", "'dev'", "'production'"]),
    ("circleci.org_id", "not-a-uuid", ["circleci.org_id", "UUID"]),
    ("circleci", KeyError, ["circleci", "required"]),
    ("default_tags.team", "", ["default_tags", "'team'"]),
    ("ecr.images_kept", 0, ["ecr.images_kept", "0"]),
    ("environments.dev.network.vpc", {"id": "vpc-0123abcd", "default": True}, ["network.vpc", "exactly one"]),
    ("environments.dev.network.subnets", {"ids": ["sg-1"]}, ["network.subnets.ids", "subnet id"]),
    ("flows.task_role_extra_statements", [{"Effect": "Allow", "Action": "s3 GetObject", "Resource": "*"}],
     ["task_role_extra_statements", "not an IAM action"]),
    ("prefect.credentials_secret_name", "x/name-abcdef", ["credentials_secret_name", "six characters"]),
]


@pytest.mark.parametrize("path,value,needles", BAD, ids=[f"{p}={v}" for p, v, _ in BAD])
def test_bad_value_names_key_value_and_rule(path: str, value: object, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(with_value(path, value))
    for needle in needles:
        assert needle in str(exc.value), str(exc.value)


def test_repository_config_is_valid() -> None:
    cfg = parse_config(RAW)
    assert cfg.env("production").deployment_types == ["staging", "main"]
    assert cfg.env("dev").deployment_types == ["dev"]


@pytest.mark.parametrize("cpu,memory,ok", [
    (256, 512, True), (256, 4096, False), (512, 4096, True), (1024, 2048, True), (1024, 9216, False),
    (4096, 30720, True), (8192, 20480, True), (8192, 18432, False), (16384, 122880, True), (300, 1024, False),
])
def test_fargate_pairs(cpu: int, memory: int, ok: bool) -> None:
    assert (fargate_pair_error(cpu, memory) is None) is ok


@pytest.mark.parametrize("name,ok", [
    ("abc", True), ("ab", False), ("a" * 64, False), ("my.bucket-1", True), ("My-bucket", False),
    ("my..bucket", False), ("192.168.1.1", False), ("xn--bucket", False), ("bucket-s3alias", False),
    ("-bucket", False), ("bucket-", False),
])
def test_bucket_names(name: str, ok: bool) -> None:
    assert (bucket_name_error(name) is None) is ok


def test_cli_bad_config_exits_1_with_zero_aws_calls(tmp_path, capsys) -> None:
    bad = (ROOT / "infra.toml").read_text().replace("retention_days = 30", "retention_days = 31")
    path = tmp_path / "infra.toml"
    path.write_text(bad)
    aws.CALLS.reset()
    assert run_cli("--env", "production", "--config", str(path), "--plan") == 1
    err = capsys.readouterr().err
    assert "logs.retention_days = 31" in err
    assert aws.CALLS.total == 0


def test_cli_bad_override_and_unknown_env(capsys) -> None:
    aws.CALLS.reset()
    assert run_cli("--env", "production", "--set", "agent.memory=3", "--plan") == 1
    assert "memory 3" in capsys.readouterr().err
    assert run_cli("--env", "qa", "--plan") == 1
    assert "environment 'qa' is not in infra.toml" in capsys.readouterr().err
    assert aws.CALLS.total == 0


def test_override_parsing() -> None:
    from flows.cli import parse_overrides

    assert parse_overrides(["agent.image_tag=abc", "agent.cpu=2048", "x.y=true"]) == {
        "agent": {"image_tag": "abc", "cpu": 2048}, "x": {"y": True}}
    with pytest.raises(ConfigError):
        parse_overrides(["agent.cpu"])


@pytest.mark.parametrize("value", ["infra-alerts", "Slack-Webhook/x", "slack-webhook/Infra Alerts", "a/b/c",
                                   "slack-webhook/"])
def test_alerts_block_must_name_a_block(value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(with_value("prefect.alerts_block", value))
    msg = str(exc.value)
    assert f"prefect.alerts_block = {value!r}" in msg and "'{block type slug}/{block name}'" in msg


@pytest.mark.parametrize("value", ["", "slack-webhook/infra-alerts", "custom-webhook/ops2"])
def test_alerts_block_accepted(value: str) -> None:
    assert parse_config(with_value("prefect.alerts_block", value)).prefect.alerts_block == value


@pytest.mark.parametrize("module", ["flows.bootstrap", "flows.drift_check", "flows.teardown"])
@pytest.mark.parametrize("argv,message", [
    (["--env", "production", "--parallelism", "0"], "error: --parallelism must be at least 1"),
    (["--env", "qa"], "error: environment 'qa' is not in infra.toml"),
])
def test_every_cli_refuses_bad_input_in_one_line_before_any_call(module, argv, message, capsys) -> None:
    import importlib

    aws.CALLS.reset()
    assert importlib.import_module(module).main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert aws.CALLS.total == 0
