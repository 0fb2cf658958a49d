"""A sandbox you can click through: the AWS emulator, a real Prefect server with its UI,
the bootstrap, and a local worker serving the management deployments.

    python -m flows.sandbox [--env production] [--port 4200] [--drift-cron "*/2 * * * *"]

It starts moto on 127.0.0.1 (a free port), `prefect server start` on 127.0.0.1:PORT
(its own PREFECT_HOME under .sandbox/), bootstraps the environment into both, and
starts `prefect worker start --type process` on the sandbox management pool — a process
pool stands in for the ECS agent, which the emulator cannot run. The drift-check
deployment is scheduled with --drift-cron (recorded as a UI-approved change, so the
drift check itself agrees with it). It stays up until interrupted (Ctrl-C), then stops
everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from infra_tasks import emulator
from infra_tasks.config import ConfigError, load_config
from infra_tasks.management import DRIFT_CHECK, INFRA_PRUNE, INFRA_UPDATE, deployment_name

from .cli import fail

ROOT = Path(__file__).resolve().parent.parent


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"prefect server did not answer {url}/health within {timeout:.0f}s")


@contextlib.contextmanager
def prefect_server(port: int, home: Path, log: Path, settings: dict[str, str] | None = None) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1:port with its own PREFECT_HOME (plus `settings`);
    stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
           **(settings or {})}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_KEY", None)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def process_worker(pool: str, log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
                                 "process"], env=dict(os.environ), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.sandbox", description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="production", help="environment to bootstrap (default production)")
    p.add_argument("--config", default=None, help="path of infra.toml")
    p.add_argument("--port", type=int, default=0, help="Prefect UI/API port on 127.0.0.1 (default: a free port)")
    p.add_argument("--drift-cron", default="*/2 * * * *",
                   help="schedule of the drift-check deployment in the sandbox (default every 2 minutes)")
    p.add_argument("--state-dir", default=str(ROOT / ".sandbox"), help="Prefect home and logs (default .sandbox/)")
    p.add_argument("--exit-after", type=float, default=None, metavar="SECONDS",
                   help="stop by itself after SECONDS (for scripted use); default: run until Ctrl-C")
    return p


def _interrupt(signum: int, _frame: object) -> None:
    # SIGTERM and SIGHUP (a closed terminal, `kill`) stop the sandbox like Ctrl-C: the
    # with-blocks below then stop the worker, the Prefect server and the emulator.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("\nstopped; everything the sandbox started has been stopped", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, {"prefect": {"drift_check_cron": args.drift_cron}})
        cfg.env(args.env)
    except ConfigError as exc:
        return fail(str(exc))
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    port = args.port or emulator.free_port()
    account = cfg.env(args.env).account_id
    from infra_tasks.names import sandbox_pool

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with emulator.moto_server() as aws_url, emulator.sandbox_env(aws_url, account, cfg.region), \
            prefect_server(port, state / "prefect-home", state / "server.log") as api, \
            temporary_settings(updates={PREFECT_API_URL: api}):
        # This process's Prefect settings were loaded at import: the context above points it
        # at the sandbox server; the environment carries it to the worker and its flow runs.
        os.environ["PREFECT_API_URL"] = api
        os.environ["INFRA_REGION"] = cfg.region
        # The schedule is recorded as an approved change so drift checks agree with it.
        from infra_tasks import overrides

        _, approved = overrides.read(cfg.prefix, args.env)
        if approved.get("prefect", {}).get("drift_check_cron") != args.drift_cron:
            overrides.write(cfg.prefix, args.env, {**approved, "prefect": {"drift_check_cron": args.drift_cron}},
                            "sandbox schedule")
        from flows.bootstrap import main as bootstrap

        boot = ["--env", args.env, "--yes"] + (["--config", args.config] if args.config else [])
        if bootstrap(boot) != 0:
            return fail("bootstrap failed; see above")
        pool = sandbox_pool(cfg.prefix, args.env)
        with process_worker(pool, state / "worker.log") as worker:
            ui = api.removesuffix("/api")
            drift, update, prune = (deployment_name(d, cfg.prefix, args.env)
                                    for d in (DRIFT_CHECK, INFRA_UPDATE, INFRA_PRUNE))
            print(f"""
Sandbox is up.
  Prefect UI        {ui}
  AWS emulator      {aws_url}   (account {account}, {cfg.region})
  Worker            process pool {pool!r} (stands in for the ECS agent); log: {state / 'worker.log'}
  ECS pools         emulated: no ECS worker runs here (the emulator cannot run containers), so the UI
                    shows them "Not Ready"; flows deployed to them cannot run in the sandbox
  Drift check       deployment {drift}, cron {args.drift_cron!r}
  Update            run deployment {update} from the UI ("Run" > custom run),
                    then approve it on the paused flow run.
  Prune             run deployment {prune} the same way: it deletes what the drift check
                    reports UNMANAGED (never data), after approval{' with the name typed' if cfg.is_protected(args.env) else ''}.
From another shell:  PREFECT_API_URL={api} prefect deployment run '{drift}'
Ctrl-C (or SIGTERM, SIGHUP) stops everything.""", flush=True)
            started = time.monotonic()
            try:
                while worker.poll() is None:
                    if args.exit_after is not None and time.monotonic() - started > args.exit_after:
                        break
                    time.sleep(1)
            except KeyboardInterrupt:
                print("\nstopping ...", file=sys.stderr)
            if worker.poll() not in (None, 0, -15):
                return fail(f"the worker exited with code {worker.returncode}; see {state / 'worker.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
