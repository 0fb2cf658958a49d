"""The embedded emulator's server (moto's application served by waitress): connections
kept alive as AWS keeps them, and a stop that ends its thread and frees its port with
connections still open."""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Any

from infra_tasks import emulator

CALLER = {"Content-Type": "application/x-www-form-urlencoded", "Host": "sts.amazonaws.com",
          "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sts/aws4_request, "
                           "SignedHeaders=host, Signature=0"}


def test_calls_share_one_connection() -> None:
    with emulator.moto_server() as url:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        for _ in range(3):
            conn.request("POST", "/", body="Action=GetCallerIdentity&Version=2011-06-15", headers=CALLER)
            response = conn.getresponse()
            assert response.status == 200 and b"<Account>" in response.read()
            assert not response.will_close  # moto's own server answered "Connection: close"
        conn.close()


def test_stops_with_connections_open_and_frees_its_port() -> None:
    errors: list[Any] = []
    before = set(threading.enumerate())  # the session's own emulator may be running
    hook, threading.excepthook = threading.excepthook, lambda args: errors.append(args.exc_value)
    try:
        for _ in range(10):
            with emulator.moto_server() as url:
                host, port = url.removeprefix("http://").split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("POST", "/", body="Action=GetCallerIdentity&Version=2011-06-15", headers=CALLER)
                conn.getresponse().read()  # left open: the stop closes it
            with socket.socket() as s:
                assert s.connect_ex((host, int(port))) != 0
    finally:
        threading.excepthook = hook
    assert errors == []  # closing sockets under the loop's select() failed it with EBADF
    assert not [t for t in threading.enumerate() if t.name == "emulator" and t not in before]
