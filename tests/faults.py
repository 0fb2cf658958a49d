"""Faults injected on the wire, for tests: a botocore `before-send` hook answers a
request with AWS's own error response, in the service's wire protocol, so the code under
test sees exactly what AWS would send."""

from __future__ import annotations

import json
from typing import Any, Iterator

from botocore.awsrequest import AWSResponse

from infra_tasks import aws


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def json_error(code: str, message: str, status: int = 400) -> AWSResponse:
    body = json.dumps({"__type": code, "message": message}).encode()
    return AWSResponse("https://ecs.us-east-1.amazonaws.com/", status,
                       {"content-type": "application/x-amz-json-1.1", "x-amzn-requestid": "fault"}, _Raw(body))


def aws_error(service: str, code: str, message: str, status: int = 400) -> AWSResponse:
    """AWS's error response for `service`, in that service's wire protocol."""
    import botocore.session

    protocol = botocore.session.get_session().get_service_model(service).metadata["protocol"]
    if protocol == "json":
        return json_error(code, message, status)
    xml = {
        "query": f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                 f"</Error><RequestId>fault</RequestId></ErrorResponse>",
        "ec2": f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
               f"<RequestID>fault</RequestID></Response>",
        "rest-xml": f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>",
    }[protocol]
    return AWSResponse(f"https://{service}.amazonaws.com/", status, {"content-type": "text/xml"},
                       _Raw(xml.encode()))


class Injector:
    """Fail the first `times` requests of one operation (None = always)."""

    def __init__(self, event: str, response: AWSResponse, times: int | None) -> None:
        self.event, self.response, self.times, self.hits = event, response, times, 0

    def __call__(self, **_: Any) -> AWSResponse | None:
        if self.times is None or self.hits < self.times:
            self.hits += 1
            return self.response
        return None

    def __enter__(self) -> "Injector":
        aws.add_handler(self.event, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        aws.remove_handler(self)
