#!/usr/bin/env python3
"""An MCP fixture server on the Python SDK (mcp 2.x `MCPServer`), for the MCP route tests.

Tools: add(a, b), slow(steps, interval_ms) (progress every interval_ms), whoami() (its --name),
wipe() (for deny rules); a prompt greet(who), a resource fixture://NAME/readme and a template
fixture://NAME/items/{item}. Streamable HTTP at /mcp on 127.0.0.1:PORT (or, with --sse, the
legacy HTTP+SSE transport of 2024-11-05: the event stream at /sse, messages to /messages/).

  --only both      the SDK's own behaviour: both revisions on one endpoint
  --only legacy    a handshake-era server (refuses the 2026-07-28 headers, as mcp 1.x servers do)
  --only modern    a 2026-07-28-only server (refuses initialize and the handshake era)
  --log FILE       appends one JSON line per request: method, path and the request's headers
  --stdio          newline-delimited JSON-RPC on stdin and stdout (a server Weir starts itself)
  --sse            the legacy HTTP+SSE transport instead of Streamable HTTP
  --list-ttl MS    tools/list answers carry ttlMs MS (2026-07-28), --list-scope public|private
  --tls CERT KEY   HTTPS with this certificate and key (PEM files)
"""

import argparse
import json
import socket

import anyio
import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer

HANDSHAKE = {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}


def build(name, log=None, list_ttl=0, list_scope="private"):
    hints = {"tools/list": CacheHint(ttl_ms=list_ttl, scope=list_scope)} if list_ttl else None
    mcp = MCPServer(name, version="1.0.0", log_level="WARNING", cache_hints=hints)

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Adds two integers."""
        return a + b

    @mcp.tool()
    async def slow(ctx: Context, steps: int = 5, interval_ms: int = 200) -> str:
        """Reports progress every interval_ms, steps times, then answers."""
        if log:
            with open(log, "a") as f:
                f.write(json.dumps({"tool": "slow", "steps": steps}) + "\n")
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            await anyio.sleep(interval_ms / 1000)
        return f"{name} done after {steps} steps"

    @mcp.tool()
    def whoami() -> str:
        """Names this server."""
        return name

    @mcp.tool()
    def wipe() -> str:
        """A tool policies deny."""
        return "wiped"

    @mcp.prompt()
    def greet(who: str) -> str:
        """Greets someone."""
        return f"Hello {who} from {name}"

    @mcp.resource(f"fixture://{name}/readme")
    def readme() -> str:
        """This server's readme."""
        return f"readme of {name}"

    @mcp.resource(f"fixture://{name}/items/{{item}}")
    def item(item: str) -> str:
        """One item."""
        return f"{name} item {item}"

    return mcp


async def answer(send, status, body, headers=()):
    raw = json.dumps(body).encode() if body is not None else b""
    hs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": raw})


class Era:
    """Wraps the dual-era app so it serves one revision only, and logs each request."""

    def __init__(self, app, only, log):
        self.app, self.only, self.log = app, only, log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"method": scope["method"], "headers": headers}) + "\n")
        version = headers.get("mcp-protocol-version")
        modern = version is not None and version not in HANDSHAKE
        if self.only == "legacy" and modern:
            return await answer(send, 400, {"jsonrpc": "2.0", "id": "server-error", "error": {
                "code": -32600, "message": f"Bad Request: Unsupported protocol version: {version}"}})
        if self.only == "modern" and not modern:
            if scope["method"] != "POST":
                return await answer(send, 405, None, [(b"allow", b"POST")])
            raw = b""
            while True:
                m = await receive()
                raw += m.get("body", b"")
                if not m.get("more_body"):
                    break
            req = json.loads(raw or b"{}")
            if "id" not in req:
                return await answer(send, 202, None)
            return await answer(send, 400, {"jsonrpc": "2.0", "id": req["id"], "error": {
                "code": -32022, "message": "Unsupported protocol version",
                "data": {"supported": ["2026-07-28"], "requested": version}}})
        return await self.app(scope, receive, send)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed as `port N`)")
    p.add_argument("--name", default="fixture")
    p.add_argument("--only", choices=["both", "legacy", "modern"], default="both")
    p.add_argument("--log")
    p.add_argument("--stdio", action="store_true", help="speak MCP on stdin and stdout instead")
    p.add_argument("--sse", action="store_true", help="the legacy HTTP+SSE transport (/sse, /messages/)")
    p.add_argument("--list-ttl", type=int, default=0)
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--list-scope", choices=["public", "private"], default="private")
    a = p.parse_args()
    if a.stdio:
        return build(a.name, a.log).run("stdio")
    if a.sse:
        app = build(a.name, a.log).sse_app(host="127.0.0.1")
    else:
        app = build(a.name, list_ttl=a.list_ttl, list_scope=a.list_scope).streamable_http_app(
            streamable_http_path="/mcp", host="127.0.0.1"
        )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", a.port))
    sock.listen(128)  # connections wait in the backlog until uvicorn serves
    print(f"port {sock.getsockname()[1]}", flush=True)
    tls = {"ssl_certfile": a.tls[0], "ssl_keyfile": a.tls[1]} if a.tls else {}
    config = uvicorn.Config(Era(app, a.only, a.log), log_level="warning", **tls)
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    main()
