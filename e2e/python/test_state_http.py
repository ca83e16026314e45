"""State API error responses over raw HTTP (urllib only, no SDK).

Dapr's HTTP errors are JSON bodies {"errorCode": "ERR_...", "message": "..."}.
Drives an already running sidecar at http://127.0.0.1:$DAPR_HTTP_PORT
(default 3500); DAPR_API_TOKEN is sent when set; STATE_STORE names the store
(default "statestore").
"""

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

BASE = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT') or '3500'}/v1.0"
STORE = os.environ.get("STATE_STORE", "statestore")


def call(method, path, body=None, headers=None):
    """-> (status, headers, body bytes); HTTP error statuses are returned, not raised."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if os.environ.get("DAPR_API_TOKEN"):
        req.add_header("dapr-api-token", os.environ["DAPR_API_TOKEN"])
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def state_path(k, store=STORE):
    return f"/state/{urllib.parse.quote(store, safe='')}/{urllib.parse.quote(k, safe='')}"


def assert_error(status, body, want_status, want_code=None):
    assert status == want_status, body
    err = json.loads(body)
    assert isinstance(err.get("errorCode"), str) and err["errorCode"].startswith("ERR_"), err
    assert isinstance(err.get("message"), str) and err["message"], err
    if want_code is not None:
        assert err["errorCode"] == want_code, err
    return err


@pytest.fixture(scope="module", autouse=True)
def sidecar_ready():
    timeout = float(os.environ.get("DAPR_HEALTH_TIMEOUT") or 60)
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, _, _ = call("GET", "/healthz/outbound")
            if 200 <= status < 300:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no Dapr sidecar answering at {BASE}/healthz/outbound after {timeout}s")
        time.sleep(0.25)


@pytest.fixture
def key():
    return f"e2e-http-{uuid.uuid4().hex}"


def test_save_and_get_roundtrip(key):
    status, _, body = call("POST", f"/state/{STORE}", [{"key": key, "value": {"n": 1}}])
    assert status == 204, body
    status, headers, body = call("GET", state_path(key))
    assert status == 200, body
    assert json.loads(body) == {"n": 1}
    assert headers.get("ETag")


def test_unknown_store(key):
    store = f"no-such-store-{uuid.uuid4().hex[:8]}"
    status, _, body = call("POST", f"/state/{store}", [{"key": key, "value": "v"}])
    err = assert_error(status, body, 400, "ERR_STATE_STORE_NOT_FOUND")
    assert store in err["message"]

    status, _, body = call("GET", state_path(key, store))
    assert_error(status, body, 400, "ERR_STATE_STORE_NOT_FOUND")


@pytest.mark.parametrize("body", [b"{not json", b'{"key": "k", "value": "v"}'], ids=["syntax", "not-array"])
def test_malformed_body(body):
    status, _, resp = call("POST", f"/state/{STORE}", body)
    assert_error(status, resp, 400, "ERR_MALFORMED_REQUEST")


def test_key_with_double_pipe_is_rejected(key):
    bad = f"{key}||suffix"
    status, _, body = call("POST", f"/state/{STORE}", [{"key": bad, "value": "v"}])
    assert_error(status, body, 400)

    status, _, body = call("GET", state_path(bad))
    assert_error(status, body, 400)


def test_stale_etag_conflict(key):
    assert call("POST", f"/state/{STORE}", [{"key": key, "value": "v1"}])[0] == 204
    status, headers, _ = call("GET", state_path(key))
    assert status == 200
    stale = headers["ETag"]
    status, _, body = call("POST", f"/state/{STORE}", [{"key": key, "value": "v2", "etag": stale}])
    assert status == 204, body

    status, _, body = call("POST", f"/state/{STORE}", [{"key": key, "value": "v3", "etag": stale}])
    assert_error(status, body, 409, "ERR_STATE_SAVE")

    status, _, body = call("DELETE", state_path(key), headers={"If-Match": stale})
    assert_error(status, body, 409, "ERR_STATE_DELETE")

    status, _, body = call("GET", state_path(key))
    assert (status, json.loads(body)) == (200, "v2")
