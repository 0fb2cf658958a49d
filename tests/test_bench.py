"""The benchmark's critical-path arithmetic, as tables (no timing), and its independence
from the test package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.critical_path import Stage, bound_at, critical_path, longest_chain
from bench.trace import StageLog

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("calls, deps, length, chain", [
    ({}, {}, 0, []),
    ({"a": 3}, {}, 3, ["a"]),
    # independent resources: the heaviest one alone
    ({"a": 3, "b": 5, "c": 1}, {}, 5, ["b"]),
    # a chain adds up
    ({"a": 1, "b": 2, "c": 4}, {"b": ("a",), "c": ("b",)}, 7, ["a", "b", "c"]),
    # a diamond: the heavier branch counts, the shared root once
    ({"vpc": 2, "role": 5, "sg": 1, "svc": 3}, {"role": ("vpc",), "sg": ("vpc",), "svc": ("role", "sg")},
     10, ["vpc", "role", "svc"]),
    # many light links beat one heavy resource
    ({"a": 1, "b": 1, "c": 1, "d": 1, "heavy": 3}, {"b": ("a",), "c": ("b",), "d": ("c",)}, 4, ["a", "b", "c", "d"]),
    # a dependency that made no calls in this stage (absent) is ignored
    ({"svc": 2}, {"svc": ("cluster",)}, 2, ["svc"]),
    # a resource with zero calls (no-op) still links its dependants
    ({"a": 2, "b": 0, "c": 3}, {"b": ("a",), "c": ("b",)}, 5, ["a", "b", "c"]),
])
def test_longest_chain(calls: dict, deps: dict, length: int, chain: list) -> None:
    assert longest_chain(calls, deps) == (length, chain)


def test_cycle_is_an_error() -> None:
    with pytest.raises(ValueError, match="cycle"):
        longest_chain({"a": 1, "b": 1}, {"a": ("b",), "b": ("a",)})


def test_command_critical_path_sums_stages() -> None:
    stages = [
        Stage("outside", serial=4),                                      # facts, lock
        Stage("plan", serial=3, calls={f"r{i}": 1 for i in range(20)}),  # facts + 20 parallel reads
        Stage("apply", calls={"a": 2, "b": 3, "c": 1}, deps={"b": ("a",)}),
        Stage("verify", calls={"a": 8, "b": 2, "c": 1}),
    ]
    assert [s.critical() for s in stages] == [4, 4, 5, 8]
    assert critical_path(stages) == 21
    # with 8 workers the 20 reads take ceil(20 / 8) = 3 rounds; the others are chain-bound
    assert [s.critical_at(8) for s in stages] == [4, 6, 5, 8]
    assert bound_at(stages, 8) == 23
    assert bound_at(stages, 1) == 4 + 23 + 6 + 11


def test_only_delayed_calls_count() -> None:
    """With latency on AWS calls only, the Prefect calls on the path cost nothing."""
    log = StageLog("apply", owner=0, serial=[("prefect", "POST /api/flow_runs/")],
                   resources={"s3.bucket/x": [("aws", "s3:CreateBucket"), ("aws", "s3:PutBucketPolicy")],
                              "prefect.block/x": [("prefect", "GET a"), ("prefect", "POST b")]},
                   deps={"prefect.block/x": ("s3.bucket/x",)})
    assert log.stage(("aws",)).critical() == 2
    assert log.stage(("aws", "prefect")).critical() == 5


def test_bench_does_not_import_tests() -> None:
    for path in BENCH.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "tests" or n.startswith("tests.") for n in names), f"{path.name} imports {names}"


def test_remote_api_makes_the_product_write_to_a_loopback_api_in_parallel() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from bench.prefect_server import remote_api
    from infra_tasks import prefect_objects

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert prefect_objects._local_api() is True  # noqa: SLF001
        with remote_api():
            assert prefect_objects._local_api() is False  # noqa: SLF001
        assert prefect_objects._local_api() is True  # noqa: SLF001


def test_postgres_programs_found_through_a_symlink_or_not_at_all(tmp_path, monkeypatch) -> None:
    import bench.prefect_server as ps

    real = tmp_path / "lib" / "postgresql" / "15" / "bin"
    real.mkdir(parents=True)
    (real / "initdb").write_text("#!/bin/sh\n")
    (real / "initdb").chmod(0o755)
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "initdb").symlink_to(real / "initdb")
    monkeypatch.setenv("PATH", str(on_path))
    assert ps.postgres_bin() == real  # pg_ctl lives beside the real initdb, not the link
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(ps.glob, "glob", lambda pattern: [])
    assert ps.postgres_bin() is None


def test_asking_for_postgres_without_it_is_one_error_line(monkeypatch, capsys) -> None:
    import pytest

    import bench.__main__ as bench_main
    import bench.prefect_server as ps

    monkeypatch.setattr(ps, "postgres_bin", lambda: None)
    with pytest.raises(SystemExit) as exit_:
        bench_main.main(["--prefect-db", "postgres"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == ("python -m bench: error: --prefect-db postgres: PostgreSQL's server programs "
                                   "(initdb, pg_ctl) were not found; install them (Debian: apt-get install "
                                   "postgresql) or use --prefect-db sqlite")
