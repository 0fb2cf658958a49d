"""Command-line plumbing shared by `flows.bootstrap` and `flows.drift_check`:
config loading with `--set` overrides, choosing the AWS target, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import tomllib
from typing import Any, Callable, Iterator

from infra_tasks.config import REPLACE, ConfigError, InfraConfig, load_config

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="environment from infra.toml (e.g. dev, production)")
    p.add_argument("--config", default=None, help="path of infra.toml (default: the repository's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value for this run, e.g. --set agent.image_tag=prefect-agent-1a2b3c4 "
                        "(VALUE is read as TOML, else as a string); repeatable")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--sandbox", action="store_true",
                        help="run against an embedded AWS emulator (moto) on 127.0.0.1; no AWS account needed")
    target.add_argument("--endpoint-url", default=None, metavar="URL",
                        help="send every AWS call to this AWS-compatible endpoint")
    p.add_argument("--parallelism", type=int, default=8, metavar="N",
                   help="resources read/applied at once (default 8; 1 = one at a time)")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. agent.image_tag=prefect-agent-abc1234")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        if isinstance(value, dict):
            value = {**value, REPLACE: True}  # an inline table replaces the whole key
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def load(args: argparse.Namespace) -> InfraConfig:
    cfg = load_config(args.config, parse_overrides(args.overrides))
    cfg.env(args.env)  # unknown environment -> ConfigError
    return cfg


def parse_and_load(parser: argparse.ArgumentParser,
                   argv: list[str] | None) -> tuple[argparse.Namespace, InfraConfig] | int:
    """The command line and the configuration it names, or (bad input: an error line
    printed, nothing touched) the exit code to return."""
    args = parser.parse_args(argv)
    if args.parallelism < 1:
        return fail("--parallelism must be at least 1")
    try:
        return args, load(args)
    except ConfigError as exc:
        return fail(str(exc))


@contextlib.contextmanager
def aws_target(args: argparse.Namespace, cfg: InfraConfig) -> Iterator[str | None]:
    """Where AWS calls go: the embedded emulator, a given endpoint, or AWS itself."""
    if args.sandbox:
        from infra_tasks.emulator import embedded

        account = cfg.env(args.env).account_id
        with embedded(account, cfg.region) as url:
            print(f"sandbox: AWS emulator at {url} (account {account}, {cfg.region}); state lives in memory "
                  f"and ends with this process", file=sys.stderr)
            yield url
        return
    if args.endpoint_url:
        from infra_tasks.aws import reset_clients

        old = os.environ.get("AWS_ENDPOINT_URL")
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
        reset_clients()
        try:
            yield args.endpoint_url
        finally:
            if old is None:
                os.environ.pop("AWS_ENDPOINT_URL", None)
            else:
                os.environ["AWS_ENDPOINT_URL"] = old
            reset_clients()
        return
    yield None


# Prefect gives the temporary local server it starts when no API is configured 20 s by
# default; a loaded two-core machine sometimes needs more.
EPHEMERAL_STARTUP_SECONDS = 180
NO_PREFECT_API = (
    "no Prefect API is configured and the temporary local Prefect server did not start within {seconds} s. "
    "Point at a server instead: run `prefect server start` in another shell and set "
    "PREFECT_API_URL=http://127.0.0.1:4200/api (or select a profile with `prefect profile use NAME`), "
    "or raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS. Nothing was changed."
)


@contextlib.contextmanager
def prefect_target() -> Iterator[None]:
    """The Prefect API the flows report to: the configured one, or Prefect's temporary
    local server with a start-up budget that holds on a busy machine. If that still
    fails to start, one clear error instead of a traceback."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from infra_tasks.aws import InfraError

    updates: dict[Any, Any] = {}
    if not PREFECT_API_URL.value() and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = EPHEMERAL_STARTUP_SECONDS
    try:
        with temporary_settings(updates=updates):
            yield
    except RuntimeError as exc:
        if "ephemeral Prefect API server" not in str(exc):
            raise
        raise InfraError(NO_PREFECT_API.format(seconds=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
                                               if not updates else EPHEMERAL_STARTUP_SECONDS)) from None


def run_command(args: argparse.Namespace, cfg: InfraConfig, body: Callable[[], int], *, stopped: str,
                cleanup: Callable[[], None] | None = None) -> int:
    """Run a mutating command's `body` against its AWS and Prefect targets: a stop (Ctrl-C,
    a lost lock) is exit 130 with what was done, an expected error one line and exit 1,
    never a traceback; the AWS calls and Prefect writes are counted and printed at the end.
    `stopped`: what to tell someone who pressed Ctrl-C outside a flow."""
    from infra_tasks import interrupt
    from infra_tasks.aws import CALLS, InfraError
    from infra_tasks.interrupt import Interrupted
    from infra_tasks.prefect_objects import PREFECT_CALLS

    started = time.monotonic()
    CALLS.reset()
    PREFECT_CALLS.reset()
    interrupt.clear()
    try:
        with aws_target(args, cfg), prefect_target():
            return body()
    except Interrupted as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(stopped, file=sys.stderr)
        return EXIT_INTERRUPTED
    except (InfraError, ConfigError) as exc:
        return fail(str(exc))
    finally:
        interrupt.clear()
        if cleanup:
            cleanup()
        print(f"AWS calls: {CALLS.total} ({len(CALLS.mutating())} mutating); Prefect writes: {PREFECT_CALLS.total}; "
              f"{time.monotonic() - started:.1f}s", file=sys.stderr)


def fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_ERROR
