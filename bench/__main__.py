"""Benchmark: wall time and API call counts on the sandbox, measured side by side, and
the measured time against the critical-path lower bound.

    python -m bench                 # print the tables
    python -m bench --write FILE    # also write them as markdown
    python -m bench --latency-ms 100 --parallelism 8 --repeat 3

Scenarios (each on a freshly reset emulator and Prefect API unless noted):
  cold         full production bootstrap (plan + apply + verify)
  rerun        the same command again on the built stack (no-op)
  plan         `--plan` on the built stack
  cold+lat P   cold bootstrap with a fixed latency injected before every AWS call, parallelism P
  cold+lat 1   the same with parallelism 1 (the ratio of the two is the engine's speed-up)
  cold+lat all P   cold bootstrap with the latency before every AWS *and* Prefect API call
                   (the API then treated as remote, on PostgreSQL: bench/prefect_server.py)

The Prefect API is a `prefect server start` on a throwaway PostgreSQL cluster
(--prefect-db postgres; `auto`, the default, when PostgreSQL's programs are found) or
Prefect's SQLite test server (--prefect-db sqlite).

Every run is traced (bench/trace.py): each call is attributed to a stage (outside plan
and apply, each plan's facts and reads, the apply) and to the resource whose read or
change made it, so the critical path (bench/critical_path.py) is measured, not assumed.
With --repeat N every scenario runs N times, interleaved, and the best wall time counts.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
from typing import Any, Callable

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

GOAL = 1.5  # measured / critical-path bound at the injected latency


def measure(name: str, fn: Callable[[], int], aws_s: float = 0.0, prefect_s: float = 0.0) -> dict[str, Any]:
    from infra_tasks.aws import CALLS
    from infra_tasks.prefect_objects import PREFECT_CALLS

    from .critical_path import critical_path
    from .trace import AWS, PREFECT, Tracer

    tracer = Tracer(aws_s, prefect_s)
    sink = io.StringIO()
    CALLS.reset()
    PREFECT_CALLS.reset()
    with tracer.installed():
        cpu, start = time.process_time(), time.perf_counter()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            code = fn()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if code not in (0, 2):
        print(sink.getvalue(), file=sys.stderr)
        raise SystemExit(f"{name}: exit code {code}")
    # The calls that get the latency are the ones the bound counts (all of them at 0 ms).
    sides = tuple(s for s, d in ((AWS, aws_s), (PREFECT, prefect_s)) if d) or (AWS, PREFECT)
    stages = tracer.sides(sides)
    latency = max(aws_s, prefect_s)
    seen = tracer.summary()
    return {"scenario": name, "exit": code, "wall_s": wall, "cpu_s": cpu, "calls": CALLS.total,
            "mutating": len(CALLS.mutating()), "prefect_writes": PREFECT_CALLS.total,
            "prefect_api": seen["prefect"], "sides": sides, "latency_s": latency,
            "counted": sum(s.total for s in stages), "critical": critical_path(stages),
            "bound_s": critical_path(stages) * latency, "tracer": tracer, "stages": stages}


def with_bound_at(row: dict[str, Any], parallelism: int) -> float:
    from .critical_path import bound_at

    return bound_at(row["stages"], parallelism) * row["latency_s"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--latency-ms", type=float, default=100.0, help="latency injected per call (default 100)")
    p.add_argument("--parallelism", type=int, default=8, help="parallelism of the fast run (default 8)")
    p.add_argument("--repeat", type=int, default=1, help="runs of every scenario; the best wall time counts")
    p.add_argument("--write", metavar="FILE", help="also write the results as markdown")
    p.add_argument("--prefect-db", choices=("postgres", "sqlite", "auto"), default="auto",
                   help="the Prefect server's database: postgres (a throwaway cluster; needs PostgreSQL's "
                        "server programs), sqlite (Prefect's test server), or auto (default): postgres if "
                        "found, else sqlite")
    args = p.parse_args(argv)

    from flows.bootstrap import main as bootstrap
    from infra_tasks import emulator
    from infra_tasks.config import load_config

    from .prefect_api import clean_prefect_api
    from .prefect_server import postgres_bin, prefect_api, remote_api

    if args.prefect_db == "auto":
        args.prefect_db = "postgres" if postgres_bin() else "sqlite"
    elif args.prefect_db == "postgres" and postgres_bin() is None:
        p.error("--prefect-db postgres: PostgreSQL's server programs (initdb, pg_ctl) were not found; "
                "install them (Debian: apt-get install postgresql) or use --prefect-db sqlite")

    cfg = load_config()
    account = cfg.env("production").account_id
    base = ["--env", "production"]
    par = str(args.parallelism)
    lat, ms = args.latency_ms / 1000.0, f"{args.latency_ms:.0f} ms"
    best: dict[str, dict[str, Any]] = {}

    def keep(row: dict[str, Any]) -> None:
        if row["scenario"] not in best or row["wall_s"] < best[row["scenario"]]["wall_s"]:
            best[row["scenario"]] = row

    with prefect_api(args.prefect_db) as args.prefect_server, emulator.moto_server() as url, \
            emulator.sandbox_env(url, account, cfg.region):
        def run(*extra: str) -> Callable[[], int]:
            return lambda: bootstrap([*base, *extra])

        def fresh() -> None:
            emulator.reset(url)
            clean_prefect_api()

        for _ in range(max(1, args.repeat)):
            fresh()
            keep(measure("cold bootstrap (AWS + Prefect)", run("--yes", "--parallelism", par)))
            keep(measure("no-op re-run (AWS + Prefect)", run("--yes", "--parallelism", par)))
            keep(measure("--plan, no changes (AWS + Prefect)", run("--plan", "--parallelism", par)))
            for scope, flags in (("AWS only", ("--no-prefect",)), ("AWS + Prefect", ())):
                for n in (par, "1"):
                    fresh()
                    keep(measure(f"cold bootstrap {scope}, +{ms}/AWS call, parallelism {n}",
                                 run("--yes", "--parallelism", n, *flags), aws_s=lat))
            fresh()
            # Latency on every Prefect API call stands for a remote API: on PostgreSQL the product
            # is let treat it as one (parallel writes); SQLite cannot take them (prefect_server.py).
            with remote_api() if args.prefect_db == "postgres" else contextlib.nullcontext():
                keep(measure(f"cold bootstrap AWS + Prefect, +{ms}/AWS and Prefect API call, parallelism {par}",
                             run("--yes", "--parallelism", par), aws_s=lat, prefect_s=lat))

    rows = list(best.values())
    text = report(rows, args)
    print(f"Prefect API: {args.prefect_server}\n\n{text}")
    if args.write:
        with open(args.write, "w") as fh:
            fh.write(f"# Benchmark\n\nMeasured by `python -m bench --repeat {args.repeat}` on "
                     f"{time.strftime('%Y-%m-%d')} ({platform.machine()}, {os.cpu_count()} cores, Python "
                     f"{platform.python_version()}); every scenario run {args.repeat} time(s), interleaved, best "
                     f"wall time kept; the emulator (moto, served by waitress) runs in the same process; the "
                     f"Prefect API: {args.prefect_server}.\n\n{text}\n")
    speedup = rows[4]["wall_s"] / rows[3]["wall_s"]
    ok = speedup >= 3.0 and rows[1]["mutating"] == 0 and rows[1]["prefect_writes"] == 0
    return 0 if ok else 1


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    ms = f"{args.latency_ms:.0f} ms"
    lines = ["| scenario | wall time (s) | AWS calls | mutating AWS calls | Prefect writes | Prefect API calls |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['scenario']} | {r['wall_s']:.1f} | {r['calls']} | {r['mutating']} | {r['prefect_writes']} | "
              f"{r['prefect_api']} |" for r in rows]
    speedup, speedup_all = rows[4]["wall_s"] / rows[3]["wall_s"], rows[6]["wall_s"] / rows[5]["wall_s"]
    lines += ["", f"Parallel speed-up of the AWS engine under {ms} injected latency per AWS call: **{speedup:.1f}x** "
              f"(parallelism {args.parallelism} vs 1; target >= 3x); with the Prefect side included "
              f"{speedup_all:.1f}x.",
              f"No-op re-run: **{rows[1]['mutating']}** mutating AWS calls and **{rows[1]['prefect_writes']}** "
              f"Prefect writes (target 0).", "",
              "## Against the critical path", "",
              "Critical path: the calls that must follow one another in the whole command (facts, the plan's "
              "reads, the flow's lock and facts, its fresh plan, the apply in dependency order, the verify's "
              "reads, the lock's release), counting only the calls that get the latency. Bound = critical-path "
              "calls x latency (no run can beat it); \"bound at P\" also counts that P workers cannot "
              "overlap more than P calls. CPU = the process's CPU seconds (the emulator runs in it).", "",
              "| scenario | calls counted | critical-path calls | bound (s) | bound at P (s) | measured (s) | "
              "measured / bound | CPU (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in [rows[0], *rows[3:]]:
        p = int(r["scenario"].rsplit(" ", 1)[-1]) if "parallelism" in r["scenario"] else args.parallelism
        ratio = f"{r['wall_s'] / r['bound_s']:.1f}x" if r["bound_s"] else "n/a (0 ms)"
        lines.append(f"| {r['scenario']} | {r['counted']} ({'+'.join(r['sides'])}) | {r['critical']} | "
                     f"{r['bound_s']:.1f} | {with_bound_at(r, p):.1f} | {r['wall_s']:.1f} | {ratio} | "
                     f"{r['cpu_s']:.1f} |")
    full = rows[-1]
    ratio = full["wall_s"] / full["bound_s"] if full["bound_s"] else float("inf")
    lines += ["", f"Full cold bootstrap, {ms} per AWS and Prefect API call, parallelism {args.parallelism}: "
              f"measured **{full['wall_s']:.1f} s** against a bound of **{full['bound_s']:.1f} s** "
              f"({full['critical']} calls on the critical path of {full['counted']}): **{ratio:.1f}x** "
              f"(goal <= {GOAL}x: {'met' if ratio <= GOAL else 'not met'}).", "",
              "Where its time goes, stage by stage (wall, critical-path calls x latency, CPU seconds):", "",
              "| stage | wall (s) | critical-path calls | of which serial | calls x latency (s) | CPU (s) |",
              "|---|---:|---:|---:|---:|---:|"]
    tracer = full["tracer"]
    sides = full["sides"]
    wrapped = [s for s in tracer.stages if s.ended is not None]
    for s in wrapped:
        st = s.stage(sides)
        lines.append(f"| {s.name} | {s.ended - s.started:.1f} | {st.critical()} | {st.serial} | "
                     f"{st.critical() * full['latency_s']:.1f} | {s.cpu_ended - s.cpu_started:.1f} |")
    outside = tracer.stages[0].stage(sides)
    in_stages = sum(s.ended - s.started for s in wrapped)
    lines.append(f"| outside plan and apply (flow start, config, lock, facts) | {full['wall_s'] - in_stages:.1f} | "
                 f"{outside.critical()} | {outside.serial} | {outside.critical() * full['latency_s']:.1f} | "
                 f"{full['cpu_s'] - sum(s.cpu_ended - s.cpu_started for s in wrapped):.1f} |")
    apply = next((s for s in wrapped if s.name == "apply"), None)
    if apply is not None:
        top = sorted(((e - b, k) for k, (b, e) in apply.spans.items()), reverse=True)[:6]
        lines += ["", "Slowest changes in its apply (wall s / calls): " + ", ".join(
            f"{k} {d:.1f} s/{len(apply.resources.get(k, []))}" for d, k in top) + "."]
    trips = sorted(tracer.prefect_round_trips, reverse=True)
    if trips:
        lines += ["", f"Prefect API round trips (latency excluded): {len(trips)}, {sum(d for d, _ in trips):.1f} s in "
                  f"all; slowest: " + ", ".join(f"{op} {d:.1f} s" for d, op in trips[:4]) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
