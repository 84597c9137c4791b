#!/usr/bin/env python3
"""A gateway that is not Weir: registers with a Weir control plane over gRPC, receives the
full snapshot, ACKs it, then proves a bad descriptor is refused.

Code is generated at run time from the repository's .proto with grpcio-tools, so the test
proves the protocol is usable from another language exactly as published.

usage: sync_client.py PROTO_DIR GRPC_HOST:PORT ADMIN_HOST:PORT
After the snapshot it changes route `api` through the admin API and expects a delta that
carries only that route.
Prints one JSON line: {"registered": ..., "revision": N, "resources": [...], "delta": {...},
"rejected": [...]}.
"""
import json
import os
import sys
import tempfile
import time
import urllib.request

from grpc_tools import protoc
import grpc


def generate(proto_dir, out):
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(proto_dir, "weir/v1/config.proto")])
    if rc != 0:
        sys.exit(f"protoc failed with {rc}")
    sys.path.insert(0, out)


def stream(pb, requests_list):
    for r in requests_list:
        yield r


def wait_applied(admin, gateway_id, revision, deadline_s):
    """Polls the admin API until `gateway_id` shows `revision` applied and a runtime report."""
    deadline = time.monotonic() + deadline_s
    seen = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{admin}/api/v1/gateways", timeout=5) as rsp:
                gateways = json.loads(rsp.read())
            seen = next((g for g in gateways if g.get("id") == gateway_id), None)
            if seen and seen.get("applied_revision") == revision and seen.get("report", {}).get(
                    "requests_per_second") == 12.5:
                return
        except (OSError, ValueError) as e:
            seen = f"error: {e}"
        time.sleep(0.05)
    sys.exit(f"{gateway_id} never showed revision {revision} applied within {deadline_s}s: {seen}")


def main():
    proto_dir, target, admin = sys.argv[1], sys.argv[2], sys.argv[3]
    out = tempfile.mkdtemp()
    generate(proto_dir, out)
    from weir.v1 import config_pb2 as pb, config_pb2_grpc as rpc

    channel = grpc.insecure_channel(target)
    stub = rpc.ConfigSyncStub(channel)
    result = {}

    import queue
    outbox = queue.Queue()
    outbox.put(pb.ConfigRequest(register=pb.Register(
        gateway_id="python-gw", version="py-1.0", labels={"lang": "python"},
        plugins=[pb.PluginCapability(name="cors", phase="pre-route", config_schema="{}")],
        protocols=["http1"], listen=["main=127.0.0.1:1"])))

    def requests():
        while True:
            m = outbox.get()
            if m is None:
                return
            yield m

    responses = stub.SyncConfig(requests())
    for rsp in responses:
        which = rsp.WhichOneof("msg")
        if which == "registered":
            result["registered"] = rsp.registered.control_plane
        elif which == "snapshot":
            snap = rsp.snapshot
            result["revision"] = snap.revision
            result["resources"] = [
                {"kind": r.kind, "name": r.name, "body": json.loads(r.body)} for r in snap.resources]
            outbox.put(pb.ConfigRequest(ack=pb.Ack(revision=snap.revision)))
            outbox.put(pb.ConfigRequest(heartbeat=pb.Heartbeat(
                applied_revision=snap.revision,
                report=pb.RuntimeReport(requests_per_second=12.5, error_rate=0.0, p99_ms=3.0))))
            body = json.dumps({"upstream": "two", "match": {"path": {"prefix": "/api"}}}).encode()
            req = urllib.request.Request(f"http://{admin}/api/v1/routes/api", data=body, method="PUT",
                                         headers={"content-type": "application/json"})
            urllib.request.urlopen(req, timeout=10).read()
        elif which == "delta":
            d = rsp.delta
            result["delta"] = {
                "revision": d.revision, "base_revision": d.base_revision,
                "upserted": [f"{r.kind}/{r.name}" for r in d.upserted],
                "removed": [f"{r.kind}/{r.name}" for r in d.removed],
                "body": json.loads(d.upserted[0].body) if d.upserted else None,
            }
            outbox.put(pb.ConfigRequest(ack=pb.Ack(revision=d.revision)))
            break
    # Close the stream only once the control plane has processed the ACK of the delta (and,
    # before it on the same stream, the heartbeat): the caller checks both in the registry.
    if "delta" in result:
        wait_applied(admin, "python-gw", result["delta"]["revision"], deadline_s=10)
    outbox.put(None)
    responses.cancel()

    bad = stub.SyncConfig(iter([pb.ConfigRequest(register=pb.Register(gateway_id="bad id!", version=""))]))
    for rsp in bad:
        if rsp.WhichOneof("msg") == "rejected":
            result["rejected"] = [e.path for e in rsp.rejected.errors]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
