"""Flow runs keep their results in their deployment type's flow bucket.

A flow run started from a work pool's defaults gets the pool's `env`: results persisted
by default, to the `s3-bucket/{prefix}-T-flows` block. The run here is a real Prefect
flow run in its own process (as a worker would start it), with the credentials of T's
flow task role, and every AWS call it makes is captured on the wire and evaluated
against that role's policy and boundary, as AWS would.
"""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
import sys

from .conftest import P, PROD_ACCOUNT, REGION, ROOT
from .iam_capture import read_jsonl
from .iam_eval import evaluate, explain_denials
from .iam_requests import requests_for
from .iam_world import account_ctx, assume, effective_policies

FLOW = """
from flows.example import hello
print("RESULT=" + hello(name="results", excited=True))
"""


def stored_value(body: bytes) -> object:
    """A persisted result: a full result record (JSON), or the serialized value alone
    (base64 of a pickle, Prefect's default serializer) when metadata is stored apart."""
    from prefect.results import ResultRecord

    try:
        return ResultRecord.deserialize(body).result
    except (ValueError, TypeError, KeyError):
        return pickle.loads(base64.b64decode(body))  # noqa: S301 - written by this test's own flow run


def test_flow_run_persists_its_result_in_its_bucket(bootstrap, boto, tmp_path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    assert bootstrap("--yes", prefect=True) == 0
    with get_client(sync_client=True) as c:
        template = c.read_work_pool(f"{P}-main").base_job_template
    pool_env = template["variables"]["properties"]["env"]["default"]
    assert pool_env == {"PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
                        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"s3-bucket/{P}-main-flows"}

    role = f"{P}-main-flow-task"
    creds = assume(boto, role)
    capture = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INFRA_"))}
    env.update(pool_env, **creds, AWS_DEFAULT_REGION=REGION, PREFECT_API_URL=PREFECT_API_URL.value(),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "capture_site"), str(ROOT)]),
               IAM_CAPTURE_FILE=str(capture), IAM_CAPTURE_PRINCIPAL=role)
    out = subprocess.run([sys.executable, "-c", FLOW], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RESULT=Hello, results!" in out.stdout

    # The flow's return value is in main's bucket (and nothing went to staging's).
    s3 = boto("s3")
    bucket = f"{P}-main-flows-{PROD_ACCOUNT}"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys, f"no result object in the flow bucket:\n{out.stderr[-3000:]}"
    values = [stored_value(s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]
    assert "Hello, results!" in values
    assert s3.list_objects_v2(Bucket=f"{P}-staging-flows-{PROD_ACCOUNT}").get("KeyCount", 0) == 0

    # Every call it made is one the flow task role may make on AWS.
    calls = read_jsonl(capture)
    assert {(c.service, c.operation) for c in calls} >= {("s3", "PutObject")}
    ctx = account_ctx(boto)
    requests = [r for c in calls for r in requests_for(c, ctx)]
    policies, boundary = effective_policies(boto, role)
    denied = explain_denials(policies, requests, boundary=boundary)
    assert denied == [], "\n".join(denied)
    assert all(evaluate(policies, r, boundary=boundary).allowed for r in requests)
