"""Distributed lock API through the official Dapr Python SDK (gRPC).

Expects a running sidecar with LOCK_STORE (default "lockstore").
"""

import os
import uuid

from dapr.clients import DaprClient
from dapr.clients.grpc._response import UnlockResponseStatus

STORE = os.environ.get("LOCK_STORE", "lockstore")


def test_try_lock_as_context_manager_releases():
    res = f"pylock-{uuid.uuid4().hex}"
    with DaprClient() as d:
        with d.try_lock(STORE, res, "owner-a", expiry_in_seconds=30) as lock:
            assert lock.success
            other = d.try_lock(STORE, res, "owner-b", expiry_in_seconds=30)
            assert not other.success
        # Leaving the block unlocked it: another owner can take it now.
        again = d.try_lock(STORE, res, "owner-b", expiry_in_seconds=30)
        assert again.success
        assert d.unlock(STORE, res, "owner-b").status == UnlockResponseStatus.success


def test_unlock_statuses():
    res = f"pylock-{uuid.uuid4().hex}"
    with DaprClient() as d:
        assert d.unlock(STORE, res, "x").status == UnlockResponseStatus.lock_does_not_exist
        assert d.try_lock(STORE, res, "x", expiry_in_seconds=30).success
        assert d.unlock(STORE, res, "y").status == UnlockResponseStatus.lock_belongs_to_others
        assert d.unlock(STORE, res, "x").status == UnlockResponseStatus.success
