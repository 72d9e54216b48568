#!/usr/bin/env python3
"""An independent MDP/0.2 peer for the interop tests: majortomo's client (PyPI), calling a
CareMesh method with a CareMesh RequestHeader built by Python protobuf.

usage: majortomo_peer.py client BROKER_URL SERVICE [TIMEOUT_S]
Prints one JSON line: {"code": <status code>, "request_id": …, "status": <ServingStatus>,
"instance_id": "…"}. Exits 1 on a protocol error or timeout.

The message types are built at run time from descriptors written here (no generated code), so
the test also proves the wire format matches proto/caremesh/rpc/v1/rpc.proto as another
protobuf implementation reads it.
"""
import json
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from majortomo import Client

F = descriptor_pb2.FieldDescriptorProto


def _file():
    fd = descriptor_pb2.FileDescriptorProto(name="caremesh_interop.proto", package="caremesh.interop", syntax="proto3")

    def message(name, fields):
        m = fd.message_type.add(name=name)
        for number, (fname, ftype, label, type_name) in enumerate(fields, start=1):
            f = m.field.add(name=fname, number=number, type=ftype, label=label or F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = type_name
        return m

    # caremesh.rpc.v1.RequestHeader: method=1, request_id=2, timeout_ms=3 (metadata, caller unused).
    message("RequestHeader", [("method", F.TYPE_STRING, None, None),
                              ("request_id", F.TYPE_UINT64, None, None),
                              ("timeout_ms", F.TYPE_UINT32, None, None)])
    # caremesh.rpc.v1.Status: code=1, message=2; ResponseHeader: request_id=1, status=2.
    message("Status", [("code", F.TYPE_INT32, None, None), ("message", F.TYPE_STRING, None, None)])
    message("ResponseHeader", [("request_id", F.TYPE_UINT64, None, None),
                               ("status", F.TYPE_MESSAGE, None, ".caremesh.interop.Status")])
    # caremesh.health.v1.HealthCheckRequest/Response.
    message("HealthCheckRequest", [("service", F.TYPE_STRING, None, None)])
    message("HealthCheckResponse", [("status", F.TYPE_INT32, None, None),
                                    ("instance_id", F.TYPE_STRING, None, None),
                                    ("version", F.TYPE_STRING, None, None)])
    return fd


def _classes():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    names = ["RequestHeader", "ResponseHeader", "HealthCheckRequest", "HealthCheckResponse"]
    return [message_factory.GetMessageClass(pool.FindMessageTypeByName("caremesh.interop." + n)) for n in names]


def client(url, service, timeout):
    RequestHeader, ResponseHeader, HealthCheckRequest, HealthCheckResponse = _classes()
    header = RequestHeader(method="/caremesh.health.v1.Health/Check", request_id=4242,
                           timeout_ms=int(timeout * 1000))
    with Client(url) as c:
        c.send(service.encode(), header.SerializeToString(), HealthCheckRequest().SerializeToString())
        frames = c.recv_all_as_list(timeout=timeout)
    reply = ResponseHeader()
    reply.ParseFromString(frames[0])
    out = {"code": reply.status.code, "message": reply.status.message, "request_id": reply.request_id}
    if reply.status.code == 0:
        body = HealthCheckResponse()
        body.ParseFromString(frames[1])
        out.update(status=body.status, instance_id=body.instance_id)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "client":
        sys.exit(__doc__)
    client(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 5.0)
