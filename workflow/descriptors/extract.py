"""Writes durabletask.bin: the FileDescriptorSet of the Durable Task protocol
exactly as the installed Dapr Python SDK (dapr.ext.workflow) compiled it.

Run after upgrading the SDK: python3 workflow/descriptors/extract.py
"""
import os
import warnings

warnings.simplefilter("ignore")
from google.protobuf import descriptor_pb2  # noqa: E402
from dapr.ext.workflow._durabletask.internal import (  # noqa: E402
    orchestrator_service_pb2,
)

seen = {}


def add(fd):
    if fd.name in seen:
        return
    for dep in fd.dependencies:
        add(dep)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    seen[fd.name] = proto


add(orchestrator_service_pb2.DESCRIPTOR)
fds = descriptor_pb2.FileDescriptorSet(file=list(seen.values()))
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "durabletask.bin")
with open(out, "wb") as f:
    f.write(fds.SerializeToString())
print(out, [p.name for p in fds.file])
