#!/usr/bin/env python3
"""Independent reference for Dapr's placement ring (standard library only).

Writes ring_vectors.json next to this file. The ring is re-derived from the
algorithm's definition, not from any Rust code:
  hash(s)   = int.from_bytes(blake2b(s, digest_size=64)[:8], "little")
  vnodes(h) = [hash(h + str(i)) for i in range(replication_factor)]
  owner(k)  = host of the first vnode with hash >= hash(k), wrapping around.
Run: python3 gen_ring_vectors.py  (output is deterministic)
"""
import bisect
import hashlib
import json
import os


def h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=64).digest()[:8], "little")


def ring(hosts, rf):
    points = {}
    # On a 64-bit collision between hosts the smaller host name keeps the point
    # (never happens with these inputs; documented tie-break of dapr-rs).
    for host in sorted(hosts, reverse=True):
        for i in range(rf):
            points[h64(host + str(i))] = host
    keys = sorted(points)
    return keys, points


def owner(keys, points, actor_id):
    if not keys:
        return None
    idx = bisect.bisect_left(keys, h64(actor_id))
    if idx == len(keys):
        idx = 0
    return points[keys[idx]]


def main():
    hash_keys = ["", "a", "abc", "actor-1", "node10", "192.168.1.83:609920",
                 "10.244.0.12:50002", "Ünïcödé-actor", "x" * 200]
    out = {"hash": [{"key": k, "hash": str(h64(k))} for k in hash_keys]}

    vnodes = []
    for host, rf in [("192.168.1.83:60992", 5), ("192.168.1.89:62362", 3), ("127.0.0.1:50002", 10)]:
        vnodes.append({"host": host, "replication_factor": rf,
                       "hashes": [str(h64(host + str(i))) for i in range(rf)]})
    out["vnodes"] = vnodes

    scenarios = [
        ("single host", ["127.0.0.1:50002"], 100),
        ("dapr test nodes", ["node1", "node2", "node3", "node4", "node5"], 100),
        ("three sidecars", ["10.0.0.1:50002", "10.0.0.2:50002", "10.0.0.3:50002"], 100),
        ("ten sidecars rf 10", ["10.1.%d.%d:3500" % (i // 4, i) for i in range(10)], 10),
        ("two hosts rf 1", ["hostA:1", "hostB:2"], 1),
        ("fifty sidecars", ["192.168.7.%d:50002" % i for i in range(1, 51)], 100),
    ]
    ids = ["%d" % i for i in range(100)] + ["actor-%d" % i for i in range(60)] + \
          ["order/%08x" % (i * 2654435761 % 2**32) for i in range(40)]
    out["rings"] = []
    for name, hosts, rf in scenarios:
        keys, points = ring(hosts, rf)
        out["rings"].append({
            "name": name, "hosts": hosts, "replication_factor": rf,
            "vnode_count": len(keys),
            "owners": [[i, owner(keys, points, i)] for i in ids],
        })

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ring_vectors.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
