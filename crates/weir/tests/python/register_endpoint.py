#!/usr/bin/env python3
"""A service that is not Weir registers its endpoint with a Weir control plane over gRPC
(`RegisterEndpoint`), renews it, is refused for an upstream that takes no registrations,
then deregisters. Stubs are generated at run time from the repository's .proto.

usage: register_endpoint.py PROTO_DIR GRPC_HOST:PORT PORT
Prints one JSON line: {"first": {...}, "renewed": {...}, "refused": {...}, "deregistered": {...}}.
"""
import json
import os
import sys
import tempfile

from grpc_tools import protoc
import grpc


def main():
    proto_dir, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with tempfile.TemporaryDirectory() as out:
        rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                          os.path.join(proto_dir, "weir/v1/config.proto")])
        if rc != 0:
            sys.exit(f"protoc failed with {rc}")
        sys.path.insert(0, out)
        from weir.v1 import config_pb2 as pb, config_pb2_grpc as rpc

        stub = rpc.ConfigSyncStub(grpc.insecure_channel(target))
        me = pb.EndpointRegistration(upstream="svc", address="127.0.0.1", port=port, weight=2, ttl_ms=5000)
        shown = lambda r: {"name": r.name, "result": r.result, "revision": r.revision, "ttl_ms": r.ttl_ms}
        result = {"first": shown(stub.RegisterEndpoint(me)), "renewed": shown(stub.RegisterEndpoint(me))}
        try:
            stub.RegisterEndpoint(pb.EndpointRegistration(upstream="fixed", address="127.0.0.1", port=port))
            result["refused"] = {"code": "OK"}
        except grpc.RpcError as e:
            result["refused"] = {"code": e.code().name, "details": e.details()}
        result["deregistered"] = shown(stub.DeregisterEndpoint(me))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
