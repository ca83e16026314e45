"""Output bindings through the official Dapr Python SDK (gRPC InvokeBinding).

Expects a running sidecar with a `bindings.localstorage` named "files" whose
rootPath is FILES_ROOT, and a `bindings.redis` named "cache".
"""

import json
import os
import uuid

import grpc
import pytest
from dapr.clients import DaprClient

ROOT = os.environ["FILES_ROOT"]


def test_localstorage_create_get_delete():
    name = f"py-{uuid.uuid4().hex}.txt"
    with DaprClient() as d:
        resp = d.invoke_binding("files", "create", "from python", {"fileName": name})
        assert resp.json() == {"fileName": name}
        with open(os.path.join(ROOT, name), "rb") as f:
            assert f.read() == b"from python"
        got = d.invoke_binding("files", "get", binding_metadata={"fileName": name})
        assert got.data == b"from python"
        assert got.text() == "from python"
        d.invoke_binding("files", "delete", binding_metadata={"fileName": name})
        assert not os.path.exists(os.path.join(ROOT, name))


def test_redis_create_get_increment():
    key = f"py-{uuid.uuid4().hex}"
    with DaprClient() as d:
        d.invoke_binding("cache", "create", json.dumps({"n": 1}), {"key": key})
        assert d.invoke_binding("cache", "get", binding_metadata={"key": key}).json() == {"n": 1}
        d.invoke_binding("cache", "create", "9", {"key": key})
        d.invoke_binding("cache", "increment", binding_metadata={"key": key})
        assert d.invoke_binding("cache", "get", binding_metadata={"key": key}).text() == "10"
        d.invoke_binding("cache", "delete", binding_metadata={"key": key})
        assert d.invoke_binding("cache", "get", binding_metadata={"key": key}).data == b""


def test_errors_carry_dapr_message():
    with DaprClient() as d:
        # invoke_binding surfaces the gRPC error itself (status INTERNAL).
        with pytest.raises(grpc.RpcError) as e:
            d.invoke_binding("nope", "get")
        assert e.value.code() == grpc.StatusCode.INTERNAL
        assert "couldn't find output binding nope" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            d.invoke_binding("files", "rename", binding_metadata={"fileName": "x"})
        assert "does not support operation rename" in e.value.details()
