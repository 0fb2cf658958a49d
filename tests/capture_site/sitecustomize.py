"""Test-only: record every AWS API call of this Python process, for IAM evaluation.

Put this directory first on PYTHONPATH and set IAM_CAPTURE_FILE (and
IAM_CAPTURE_PRINCIPAL, the ARN of the role whose credentials the process uses): Python
imports `sitecustomize` at start-up, and this one hooks every botocore Session created
afterwards — boto3's, and aiobotocore's AioSession, which subclasses it — so every client
of every session, sync or async, reports each API call before it is sent. One JSON line
per call is appended to IAM_CAPTURE_FILE:

    {"principal": ..., "service": "ecs", "operation": "RunTask", "region": "us-east-1",
     "params": {...}}

`params` are the API parameters as the caller passed them (taken at botocore's
`before-parameter-build` event). botocore's `before-call` event, which does the
recording, carries the request already serialised for the wire (URL, headers, an encoded
body), which is useless for matching IAM actions and condition keys.

Without IAM_CAPTURE_FILE this module does nothing. It never changes a request.
"""

from __future__ import annotations

import os


def _install(path: str) -> None:
    import json
    import threading

    import botocore.session

    lock = threading.Lock()
    key = "_iam_capture_params"
    principal = os.environ.get("IAM_CAPTURE_PRINCIPAL", "")

    def plain(value: object) -> object:
        # A JSON-safe copy (bodies and streams become strings): the caller's dict is untouched.
        return json.loads(json.dumps(value, default=str))

    def remember(params: dict | None = None, context: dict | None = None, **_: object) -> None:
        if context is not None:
            context[key] = plain(params or {})

    def record(model: object = None, context: dict | None = None, request_signer: object = None,
               **_: object) -> None:
        line = json.dumps({
            "principal": principal,
            "service": model.service_model.service_name,  # type: ignore[attr-defined]
            "operation": model.name,  # type: ignore[attr-defined]
            "region": getattr(request_signer, "region_name", None),
            "params": (context or {}).get(key, {}),
        }, default=str)
        with lock, open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")

    original_init = botocore.session.Session.__init__

    def init(self: botocore.session.Session, *args: object, **kwargs: object) -> None:
        original_init(self, *args, **kwargs)
        # Session-level handlers are copied into every client the session creates.
        self.register("before-parameter-build", remember, unique_id="iam-capture-params")
        self.register("before-call", record, unique_id="iam-capture-call")

    botocore.session.Session.__init__ = init  # type: ignore[method-assign]


if os.environ.get("IAM_CAPTURE_FILE"):
    _install(os.environ["IAM_CAPTURE_FILE"])
