"""An example flow, and the shape a team's flow takes in this repository.

It is deployed from `prefect.yaml` (repository root) to every deployment type, so each new
runtime (image, work pool, roles, network, logs) has one flow that proves it works
end to end: run `hello-main` (or `hello-staging`, `hello-dev`) from the Prefect UI and
its log and markdown artifact show where it ran.

Parameter type hints become the validated form in the Prefect UI.
"""

from __future__ import annotations

import os
import platform
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run
from pydantic import Field


def format_greeting(name: str, excited: bool = False) -> str:
    """Pure helper (not a flow): the greeting text."""
    name = " ".join(name.split()) or "world"
    return f"Hello, {name}{'!' if excited else '.'}"


@task(retries=2, retry_delay_seconds=5)
def greet(name: str, excited: bool) -> str:
    greeting = format_greeting(name, excited)
    get_run_logger().info(greeting)
    return greeting


@task
def describe_runtime() -> dict[str, str]:
    """Where this run executes: visible in the run's artifact, handy after a deploy."""
    return {
        "deployment": deployment.name or "(none: local run)",
        "flow run": flow_run.name or "",
        "python": platform.python_version(),
        # Set by the ECS agent for flow runs on Fargate; absent locally.
        "ecs task": os.environ.get("ECS_CONTAINER_METADATA_URI_V4", "(not on ECS)").rsplit("/", 1)[-1],
    }


@flow(name="hello", log_prints=True)
def hello(
    name: Annotated[str, Field(min_length=1, max_length=100)] = "world",
    excited: bool = False,
) -> str:
    """Greet someone and record where the run executed.

    Args:
        name: Who to greet.
        excited: End the greeting with an exclamation mark.
    """
    greeting = greet(name, excited)
    runtime = describe_runtime()
    rows = "\n".join(f"| {k} | `{v}` |" for k, v in runtime.items())
    create_markdown_artifact(
        key="hello-runtime",
        markdown=f"## {greeting}\n\n| | |\n|---|---|\n{rows}\n",
        description="Greeting and the runtime this flow run executed in",
    )
    return greeting


if __name__ == "__main__":
    hello()
