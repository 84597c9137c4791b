#!/usr/bin/env python3
"""An MCP client on the Python SDK (mcp 2.x `mcp.Client`), for the MCP route tests. Connects in
the given mode, lists tools, makes the given calls and prints one JSON line:
{"version", "tools": [names], "calls": [{"tool", "text", "error", "progress": [seconds after the
call began], "took"}]}.

  mcp_client.py --url URL --mode legacy|2026-07-28|sse [--token T] --call NAME '{"a": 1}' ...
               [--catalog] [--get PROMPT '{"who": "x"}'] [--read URI]

--mode sse speaks the legacy HTTP+SSE transport (2024-11-05): an event stream at URL.
"""

import argparse
import json
import time

import anyio
import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def run(a):
    headers = {"authorization": f"Bearer {a.token}"} if a.token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0))
    out = {"tools": [], "calls": []}
    if a.mode == "sse":
        transport, mode = sse_client(a.url, headers=headers, timeout=30.0, sse_read_timeout=60.0), "legacy"
    else:
        transport, mode = streamable_http_client(a.url, http_client=http), a.mode
    async with http, Client(transport, mode=mode) as c:
        out["version"] = c.protocol_version
        out["tools"] = sorted(t.name for t in (await c.list_tools()).tools)
        if a.catalog:
            out["prompts"] = sorted(p.name for p in (await c.list_prompts()).prompts)
            out["resources"] = sorted(str(r.uri) for r in (await c.list_resources()).resources)
            out["templates"] = sorted(t.uri_template for t in (await c.list_resource_templates()).resource_templates)
        out["got"] = []
        for name, args in a.get:
            r = await c.get_prompt(name, json.loads(args))
            out["got"].append(" ".join(m.content.text for m in r.messages))
        out["read"] = []
        for uri in a.read:
            r = await c.read_resource(uri)
            out["read"].append(" ".join(x.text for x in r.contents))
        for name, args in a.call:
            began = time.monotonic()
            seen = []

            async def progress(p, total, message, seen=seen, began=began):
                seen.append(round(time.monotonic() - began, 3))

            call = {"tool": name, "progress": seen}
            try:
                r = await c.call_tool(name, json.loads(args), progress_callback=progress)
                call["text"] = " ".join(x.text for x in r.content if getattr(x, "text", None))
                call["is_error"] = bool(r.is_error)
            except MCPError as e:
                call["error"] = {"code": e.code, "message": e.error.message}
            call["took"] = round(time.monotonic() - began, 3)
            out["calls"].append(call)
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=["legacy", "2026-07-28", "auto", "sse"], required=True)
    p.add_argument("--token")
    p.add_argument("--call", nargs=2, action="append", default=[], metavar=("TOOL", "ARGS"))
    p.add_argument("--catalog", action="store_true", help="also list prompts, resources and templates")
    p.add_argument("--get", nargs=2, action="append", default=[], metavar=("PROMPT", "ARGS"))
    p.add_argument("--read", action="append", default=[], metavar="URI")
    anyio.run(run, p.parse_args())


if __name__ == "__main__":
    main()
