"""Pub/sub with the official Python SDK against dapr-rs daprd.

The harness (runtime/tests/pubsub_python.rs) starts daprd with
--app-port $SUBSCRIBER_PORT and runs this file; the subscriber app lives
here, started at import so daprd finds it: an HTTP app (SUBSCRIBER=http,
GET /dapr/subscribe + POST deliveries) or a `dapr.ext.grpc.App`
(SUBSCRIBER=grpc). PUBSUB names the component, TOPIC a topic unique to the
run, APP_ID the sidecar's app id.
"""

import json
import os
import queue
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dapr.clients import DaprClient

PUBSUB = os.environ.get("PUBSUB", "pubsub")
TOPIC = os.environ["TOPIC"]
APP_ID = os.environ["APP_ID"]
PORT = int(os.environ["SUBSCRIBER_PORT"])
MODE = os.environ.get("SUBSCRIBER", "http")

received: "queue.Queue[dict]" = queue.Queue()


class Subscriber(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, status: int, body: bytes = b"", ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/dapr/subscribe":
            subs = [{"pubsubname": PUBSUB, "topic": TOPIC, "route": "/events"}]
            self._reply(200, json.dumps(subs).encode())
        else:
            self._reply(404)

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        event = json.loads(self.rfile.read(length) or b"null")
        received.put(
            {
                "path": self.path,
                "content_type": self.headers.get("content-type"),
                "event": event,
            }
        )
        self._reply(200, json.dumps({"status": "SUCCESS"}).encode())


def _start_http():
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Subscriber)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def _start_grpc():
    from dapr.ext.grpc import App

    app = App()

    @app.subscribe(pubsub_name=PUBSUB, topic=TOPIC)
    def on_event(event) -> None:
        data = event.Data()
        if isinstance(data, (bytes, bytearray)):
            data = data.decode()
        received.put(
            {
                "path": "grpc",
                "content_type": event.ContentType(),
                "event": {
                    "id": event.EventID(),
                    "source": event.Source(),
                    "type": event.EventType(),
                    "data": data,
                },
            }
        )

    threading.Thread(
        target=app.run, kwargs={"app_port": PORT, "listen_address": "127.0.0.1"}, daemon=True
    ).start()


_start_grpc() if MODE == "grpc" else _start_http()


def _wait_sidecar_ready(timeout: float = 20.0) -> None:
    """daprd reports ready once it has found this app and subscribed."""
    url = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}/v1.0/healthz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 204:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("daprd did not become ready")


_wait_sidecar_ready()


def _next(timeout: float = 10.0) -> dict:
    try:
        return received.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no event delivered within {timeout}s")


def _data(delivery: dict):
    """The event data as JSON whatever the subscriber kind."""
    data = delivery["event"]["data"]
    return json.loads(data) if isinstance(data, str) else data


def test_publish_event_is_delivered():
    with DaprClient() as d:
        d.publish_event(
            pubsub_name=PUBSUB,
            topic_name=TOPIC,
            data=json.dumps({"order": 1}),
            data_content_type="application/json",
        )
    got = _next()
    assert _data(got) == {"order": 1}
    assert got["event"]["source"] == APP_ID
    assert got["event"]["type"] == "com.dapr.event.sent"
    if MODE == "http":
        assert got["path"] == "/events"
        assert got["content_type"] == "application/cloudevents+json"
        assert got["event"]["topic"] == TOPIC
        assert got["event"]["pubsubname"] == PUBSUB


def test_publish_metadata_overrides_envelope():
    with DaprClient() as d:
        d.publish_event(
            pubsub_name=PUBSUB,
            topic_name=TOPIC,
            data=json.dumps({"order": 2}),
            data_content_type="application/json",
            publish_metadata={"cloudevent.id": "py-id-2", "cloudevent.type": "py.type"},
        )
    got = _next()
    assert got["event"]["id"] == "py-id-2"
    assert got["event"]["type"] == "py.type"


def test_publish_events_bulk():
    if not hasattr(DaprClient, "publish_events"):
        pytest.skip("this SDK version has no publish_events")
    with DaprClient() as d:
        resp = d.publish_events(
            pubsub_name=PUBSUB,
            topic_name=TOPIC,
            data=[json.dumps({"bulk": i}) for i in range(3)],
            data_content_type="application/json",
        )
    assert resp.failed_entries == []
    got = sorted(_data(_next())["bulk"] for _ in range(3))
    assert got == [0, 1, 2]


def test_raw_payload_skips_the_envelope():
    # With rawPayload the bytes travel untouched: a CloudEvent made by the
    # publisher arrives exactly as sent, without daprd's fields.
    raw = {
        "id": "raw-1",
        "specversion": "1.0",
        "type": "raw.type",
        "source": "publisher-made",
        "datacontenttype": "application/json",
        "data": {"r": 1},
    }
    with DaprClient() as d:
        d.publish_event(
            pubsub_name=PUBSUB,
            topic_name=TOPIC,
            data=json.dumps(raw),
            publish_metadata={"rawPayload": "true"},
        )
    got = _next()
    assert got["event"]["id"] == "raw-1"
    assert got["event"]["source"] == "publisher-made"
    assert _data(got) == {"r": 1}
    if MODE == "http":
        assert "pubsubname" not in got["event"]


def test_unknown_pubsub_is_an_error():
    with DaprClient() as d:
        with pytest.raises(Exception) as err:
            d.publish_event(pubsub_name="no-such-pubsub", topic_name=TOPIC, data="x")
    assert "no-such-pubsub" in str(err.value)
