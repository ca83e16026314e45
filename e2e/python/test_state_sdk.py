"""State API end to end through the official Dapr Python SDK (gRPC).

Drives an already running Dapr-compatible sidecar; nothing here starts one.
Configuration is what the SDK itself reads, plus the store name:

    DAPR_HTTP_PORT   sidecar HTTP port (SDK health check), default 3500
    DAPR_GRPC_PORT   sidecar gRPC port, default 50001
    DAPR_API_TOKEN   sent as dapr-api-token when set
    STATE_STORE      state store component name, default "statestore"

    python3 -m pytest -q e2e/python

The store must support ETags, transactions, first-write concurrency and
ttlInSeconds (Go Dapr's state.redis does). Every test uses its own uuid key
prefix, so runs never collide and nothing needs cleaning up.
"""

import os
import time
import uuid

import grpc
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

STORE = os.environ.get("STATE_STORE", "statestore")
FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


@pytest.fixture(scope="module")
def client():
    # DaprClient() blocks until /v1.0/healthz/outbound answers (DAPR_HEALTH_TIMEOUT).
    with DaprClient() as c:
        yield c


@pytest.fixture
def key():
    """key("name") -> a key unique to this test run and test."""
    prefix = f"e2e-py-{uuid.uuid4().hex}"
    return lambda name="k": f"{prefix}-{name}"


def etag_of(client, k):
    etag = client.get_state(STORE, k).etag
    assert etag, f"get_state({k!r}) returned no etag"
    return etag


def test_roundtrip_bytes(client, key):
    value = bytes(range(256)) + b"\x00tail"
    client.save_state(STORE, key(), value)
    assert client.get_state(STORE, key()).data == value


def test_roundtrip_str(client, key):
    client.save_state(STORE, key(), "hello dapr")
    resp = client.get_state(STORE, key())
    assert resp.data == b"hello dapr"
    assert resp.text() == "hello dapr"


def test_overwrite_without_etag_is_last_write_wins(client, key):
    client.save_state(STORE, key(), "one")
    client.save_state(STORE, key(), "two")
    assert client.get_state(STORE, key()).text() == "two"


def test_get_missing_key_is_empty(client, key):
    resp = client.get_state(STORE, key("never-written"))
    assert resp.data == b""
    assert resp.etag == ""


def test_etag_changes_and_stale_etag_is_rejected(client, key):
    k = key()
    client.save_state(STORE, k, "v1")
    etag1 = etag_of(client, k)

    client.save_state(STORE, k, "v2", etag=etag1)
    etag2 = etag_of(client, k)
    assert etag2 != etag1

    with pytest.raises(DaprGrpcError) as err:
        client.save_state(STORE, k, "v3", etag=etag1)
    assert err.value.code() == grpc.StatusCode.ABORTED, err.value.details()

    resp = client.get_state(STORE, k)
    assert resp.text() == "v2"
    assert resp.etag == etag2


def test_first_write_concurrency(client, key):
    k = key()
    client.save_state(STORE, k, "first", options=FIRST_WRITE)

    # The key exists now: first-write without an etag must lose.
    with pytest.raises(DaprGrpcError):
        client.save_state(STORE, k, "second", options=FIRST_WRITE)
    assert client.get_state(STORE, k).text() == "first"

    # With the current etag it goes through, and that etag is then stale.
    etag = etag_of(client, k)
    client.save_state(STORE, k, "third", etag=etag, options=FIRST_WRITE)
    assert client.get_state(STORE, k).text() == "third"
    with pytest.raises(DaprGrpcError):
        client.save_state(STORE, k, "fourth", etag=etag, options=FIRST_WRITE)
    assert client.get_state(STORE, k).text() == "third"


def test_delete(client, key):
    client.save_state(STORE, key(), "doomed")
    client.delete_state(STORE, key())
    assert client.get_state(STORE, key()).data == b""
    # Deleting a missing key is not an error.
    client.delete_state(STORE, key())


def test_delete_with_etag(client, key):
    k = key()
    client.save_state(STORE, k, "v1")
    stale = etag_of(client, k)
    client.save_state(STORE, k, "v2")
    current = etag_of(client, k)

    with pytest.raises(DaprGrpcError) as err:
        client.delete_state(STORE, k, etag=stale)
    assert err.value.code() == grpc.StatusCode.ABORTED, err.value.details()
    assert client.get_state(STORE, k).text() == "v2"

    client.delete_state(STORE, k, etag=current)
    resp = client.get_state(STORE, k)
    assert resp.data == b""
    assert resp.etag == ""


def test_save_bulk_state(client, key):
    client.save_bulk_state(
        STORE,
        [
            StateItem(key=key("a"), value="alpha"),
            StateItem(key=key("b"), value=b"\x00beta"),
            StateItem(key=key("c"), value="gamma"),
        ],
    )
    assert client.get_state(STORE, key("a")).text() == "alpha"
    assert client.get_state(STORE, key("b")).data == b"\x00beta"
    assert client.get_state(STORE, key("c")).text() == "gamma"

    # Items carry their own etags: a bulk save with the current one succeeds.
    etag = etag_of(client, key("a"))
    client.save_bulk_state(STORE, [StateItem(key=key("a"), value="alpha2", etag=etag)])
    assert client.get_state(STORE, key("a")).text() == "alpha2"


def test_get_bulk_state(client, key):
    present = {key(f"p{i}"): f"value-{i}".encode() for i in range(5)}
    for k, v in present.items():
        client.save_state(STORE, k, v)
    missing = [key("missing-1"), key("missing-2")]

    resp = client.get_bulk_state(STORE, keys=list(present) + missing, parallelism=3)

    items = {item.key: item for item in resp.items}
    assert len(resp.items) == len(present) + len(missing)
    assert set(items) == set(present) | set(missing)
    for k, v in present.items():
        assert items[k].data == v
        assert items[k].etag
        assert not items[k].error
    for k in missing:
        assert not items[k].data
        assert not items[k].etag
        assert not items[k].error


def test_transaction_upserts_and_deletes_together(client, key):
    client.save_state(STORE, key("update"), "old")
    client.save_state(STORE, key("delete"), "doomed")

    client.execute_state_transaction(
        STORE,
        operations=[
            TransactionalStateOperation(key=key("insert"), data="inserted"),
            TransactionalStateOperation(key=key("update"), data=b"updated"),
            TransactionalStateOperation(
                key=key("delete"), operation_type=TransactionOperationType.delete
            ),
        ],
    )

    assert client.get_state(STORE, key("insert")).text() == "inserted"
    assert client.get_state(STORE, key("update")).text() == "updated"
    assert client.get_state(STORE, key("delete")).data == b""


def test_transaction_with_current_etag(client, key):
    k = key()
    client.save_state(STORE, k, "v1")
    etag = etag_of(client, k)
    client.execute_state_transaction(
        STORE, operations=[TransactionalStateOperation(key=k, data="v2", etag=etag)]
    )
    assert client.get_state(STORE, k).text() == "v2"


def test_ttl_expires(client, key):
    client.save_state(STORE, key("ttl"), "short-lived", state_metadata={"ttlInSeconds": "1"})
    client.save_state(STORE, key("keep"), "long-lived")
    assert client.get_state(STORE, key("ttl")).text() == "short-lived"

    deadline = time.monotonic() + 10
    while client.get_state(STORE, key("ttl")).data:
        assert time.monotonic() < deadline, "value with ttlInSeconds=1 still there after 10s"
        time.sleep(0.25)
    assert client.get_state(STORE, key("keep")).text() == "long-lived"


def test_unknown_store_is_an_error_naming_it(client, key):
    store = f"no-such-store-{uuid.uuid4().hex[:8]}"
    with pytest.raises(DaprGrpcError) as err:
        client.get_state(store, key())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert store in err.value.details()

    with pytest.raises(DaprGrpcError) as err:
        client.save_state(store, key(), "v")
    assert store in err.value.details()


def test_unicode_key_and_value(client, key):
    k = key("ключ-鍵-🔑-ü")
    value = "héllo wörld — 日本語 ✓ 🚀"
    client.save_state(STORE, k, value)
    assert client.get_state(STORE, k).text() == value
    [item] = client.get_bulk_state(STORE, keys=[k]).items
    assert item.key == k
    assert item.data.decode("utf-8") == value


def test_one_mib_value(client, key):
    value = os.urandom(1 << 20)
    client.save_state(STORE, key(), value)
    assert client.get_state(STORE, key()).data == value
