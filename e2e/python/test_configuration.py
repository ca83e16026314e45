"""Configuration API through the official Dapr Python SDK (gRPC).

Expects a running sidecar with CONFIG_STORE (default "configstore") of type
configuration.redis on REDIS_ADDR, keyspace notifications enabled.
"""

import os
import socket
import threading
import uuid

from dapr.clients import DaprClient

STORE = os.environ.get("CONFIG_STORE", "configstore")
REDIS = os.environ.get("REDIS_ADDR", "127.0.0.1:16379")


def redis_set(key, value):
    host, port = REDIS.rsplit(":", 1)
    args = ["SET", key, value]
    req = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection((host, int(port))) as s:
        s.sendall(req.encode())
        assert s.recv(64).startswith(b"+OK")


def test_get_configuration():
    key = f"pycfg-{uuid.uuid4().hex}"
    redis_set(key, "v-one||5")
    with DaprClient() as d:
        resp = d.get_configuration(store_name=STORE, keys=[key], config_metadata={})
        assert resp.items[key].value == "v-one"
        assert resp.items[key].version == "5"


def test_subscribe_configuration():
    key = f"pycfg-sub-{uuid.uuid4().hex}"
    got = []
    seen = threading.Event()

    def handler(sub_id, resp):
        for k, item in resp.items.items():
            got.append((k, item.value, item.version))
            seen.set()

    with DaprClient() as d:
        sub_id = d.subscribe_configuration(
            store_name=STORE, keys=[key], handler=handler, config_metadata={}
        )
        assert sub_id
        redis_set(key, "changed||2")
        assert seen.wait(10), "no update within 10 s"
        assert (key, "changed", "2") in got
        assert d.unsubscribe_configuration(store_name=STORE, id=sub_id)
