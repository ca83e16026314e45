"""Secrets API through the official Dapr Python SDK (gRPC).

Expects a running sidecar whose SECRET_STORE (default "localsecrets") is a
secretstores.local.file store over runtime/tests/secrets.rs's file, with
"hidden" denied by the Configuration's secrets.scopes.
"""

import os

import grpc
import pytest
from dapr.clients import DaprClient

STORE = os.environ.get("SECRET_STORE", "localsecrets")


def test_get_secret():
    with DaprClient() as d:
        resp = d.get_secret(store_name=STORE, key="db.password")
        assert resp.secret == {"db.password": "s3cr3t"}


def test_get_bulk_secret_leaves_out_denied():
    with DaprClient() as d:
        resp = d.get_bulk_secret(store_name=STORE)
        assert resp.secrets["apikey"] == {"apikey": "k-123"}
        assert resp.secrets["db.user"] == {"db.user": "admin"}
        assert "hidden" not in resp.secrets


def test_denied_secret_is_permission_denied():
    with DaprClient() as d:
        with pytest.raises(grpc.RpcError) as e:
            d.get_secret(store_name=STORE, key="hidden")
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_unknown_store_is_invalid_argument():
    with DaprClient() as d:
        with pytest.raises(grpc.RpcError) as e:
            d.get_secret(store_name="no-such-store", key="x")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
