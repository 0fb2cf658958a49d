"""Benchmark: wall time and AWS call counts on the sandbox, measured side by side.

    python -m bench                 # print the table
    python -m bench --write FILE    # also write it as markdown
    python -m bench --latency-ms 100 --parallelism 8

Scenarios (each on a freshly reset emulator unless noted):
  cold         full production bootstrap (plan + apply + verify)
  rerun        the same command again on the built stack (no-op)
  plan         `--plan` on the built stack
  cold+lat P   cold bootstrap with a fixed latency injected before every AWS call, parallelism P
  cold+lat 1   the same with parallelism 1
The ratio of the last two is the speed-up of the parallel engine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from typing import Any, Callable

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")


def measure(name: str, fn: Callable[[], int]) -> dict[str, Any]:
    from infra_tasks.aws import CALLS
    from infra_tasks.prefect_objects import PREFECT_CALLS

    sink = io.StringIO()
    CALLS.reset()
    PREFECT_CALLS.reset()
    start = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = fn()
    wall = time.perf_counter() - start
    if code not in (0, 2):
        print(sink.getvalue(), file=sys.stderr)
        raise SystemExit(f"{name}: exit code {code}")
    return {"scenario": name, "exit": code, "wall_s": wall, "calls": CALLS.total, "mutating": len(CALLS.mutating()),
            "prefect_writes": PREFECT_CALLS.total}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--latency-ms", type=float, default=100.0, help="latency injected per AWS call (default 100)")
    p.add_argument("--parallelism", type=int, default=8, help="parallelism of the fast run (default 8)")
    p.add_argument("--write", metavar="FILE", help="also write the results as a markdown table")
    args = p.parse_args(argv)

    from prefect.testing.utilities import prefect_test_harness

    from flows.bootstrap import main as bootstrap
    from infra_tasks import aws, emulator
    from infra_tasks.config import load_config

    cfg = load_config()
    account = cfg.env("production").account_id
    base = ["--env", "production"]
    rows = []
    with prefect_test_harness(server_startup_timeout=120), emulator.moto_server() as url, \
            emulator.sandbox_env(url, account, cfg.region):
        def run(*extra: str) -> Callable[[], int]:
            return lambda: bootstrap([*base, *extra])

        from tests.conftest import clean_prefect

        def fresh() -> None:
            emulator.reset(url)
            clean_prefect()

        fresh()
        rows.append(measure("cold bootstrap (AWS + Prefect)", run("--yes", "--parallelism", str(args.parallelism))))
        rows.append(measure("no-op re-run (AWS + Prefect)", run("--yes", "--parallelism", str(args.parallelism))))
        rows.append(measure("--plan, no changes (AWS + Prefect)", run("--plan", "--parallelism",
                                                                       str(args.parallelism))))

        delay = args.latency_ms / 1000.0

        def sleeper(**_: Any) -> None:
            time.sleep(delay)
        aws.add_handler("before-send", sleeper)
        try:
            for scope, flags in (("AWS only", ("--no-prefect",)), ("AWS + Prefect", ())):
                for par in (args.parallelism, 1):
                    fresh()
                    rows.append(measure(f"cold bootstrap {scope}, +{args.latency_ms:.0f} ms/AWS call, "
                                        f"parallelism {par}", run("--yes", "--parallelism", str(par), *flags)))
        finally:
            aws.remove_handler(sleeper)

    ratio = rows[4]["wall_s"] / rows[3]["wall_s"]
    ratio_all = rows[6]["wall_s"] / rows[5]["wall_s"]
    lines = ["| scenario | wall time (s) | AWS calls | mutating AWS calls | Prefect writes |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['scenario']} | {r['wall_s']:.1f} | {r['calls']} | {r['mutating']} | {r['prefect_writes']} |"
              for r in rows]
    lines.append("")
    lines.append(f"Parallel speed-up of the AWS engine under {args.latency_ms:.0f} ms injected latency per AWS "
                 f"call: **{ratio:.1f}x** (parallelism {args.parallelism} vs 1; target >= 3x).")
    lines.append(f"With the Prefect side included: {ratio_all:.1f}x — its ~10 writes go to a local SQLite test "
                 f"server, get no injected latency and are a fixed cost that parallelism does not shorten much.")
    lines.append(f"No-op re-run: **{rows[1]['mutating']}** mutating AWS calls and **{rows[1]['prefect_writes']}** "
                 f"Prefect writes (target 0).")
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(args.write, "w") as fh:
            fh.write(f"# Benchmark\n\nMeasured by `python -m bench` on {time.strftime('%Y-%m-%d')} "
                     f"({os.cpu_count()} cores), one run, side by side.\n\n{text}\n")
    ok = ratio >= 3.0 and rows[1]["mutating"] == 0 and rows[1]["prefect_writes"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
