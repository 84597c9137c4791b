#!/usr/bin/env python3
"""Gateways that report a synthetic daily load: for the control plane's forecast test.

Registers GATEWAYS gateways over gRPC (code generated from the repository's .proto), then
has each send a heartbeat every 50 ms whose requests_per_second is its share of
`load(t)`: a day of DAY seconds with quiet nights and a midday peak, on a slow ramp. Runs
DAYS days, then exits.

usage: synthetic_reports.py PROTO_DIR GRPC_HOST:PORT GATEWAYS DAY DAYS [flat] [HEARTBEAT_S]
"""
import math
import os
import queue
import sys
import tempfile
import threading
import time

from grpc_tools import protoc
import grpc


def load(t, day, flat):
    if flat:
        return 250.0
    d, phase = divmod(t / day, 1.0)
    bump = math.sin(math.pi * (phase - 0.25) / 0.5) if 0.25 <= phase <= 0.75 else 0.0
    return 120.0 + 10.0 * d + 380.0 * bump


def main():
    proto_dir, target, n, day, days = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    flat = len(sys.argv) > 6 and sys.argv[6] == "flat"
    every = float(sys.argv[7]) if len(sys.argv) > 7 else 0.05
    out = tempfile.mkdtemp()
    if protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                    os.path.join(proto_dir, "weir/v1/config.proto")]) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)
    from weir.v1 import config_pb2 as pb, config_pb2_grpc as rpc

    start = time.monotonic()
    stop = threading.Event()

    def gateway(i):
        stub = rpc.ConfigSyncStub(grpc.insecure_channel(target))
        outbox = queue.Queue()
        outbox.put(pb.ConfigRequest(register=pb.Register(
            gateway_id=f"synthetic-{i}", version="synthetic", labels={"pool": "web"}, protocols=["http1"])))

        def requests():
            while not stop.is_set():
                try:
                    yield outbox.get(timeout=0.2)
                except queue.Empty:
                    pass

        def send():
            while not stop.is_set():
                rps = load(time.monotonic() - start, day, flat) / n
                outbox.put(pb.ConfigRequest(heartbeat=pb.Heartbeat(
                    report=pb.RuntimeReport(requests_per_second=rps))))
                time.sleep(every)

        threading.Thread(target=send, daemon=True).start()
        try:
            for _ in stub.SyncConfig(requests()):
                if stop.is_set():
                    return
        except grpc.RpcError:
            pass

    for i in range(n):
        threading.Thread(target=gateway, args=(i,), daemon=True).start()
    time.sleep(day * days)
    stop.set()


if __name__ == "__main__":
    main()
