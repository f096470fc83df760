#!/usr/bin/env python3
"""Talks to a running Enclave with the official clients: the `openai` package (the
OpenAI-compatible facade: list models, chat completion with and without streaming) and the MCP
Python SDK `mcp` (Streamable HTTP: initialize, list tools, call search). Run by the Rust test
`tests/api/clients.rs`, which starts the server and seeds the workspace.

Usage: check_clients.py BASE_URL WORKSPACE_ID API_KEY QUERY EXPECTED_TEXT
Exit 0 and a last line "clients: N passed, 0 failed" when every check holds.
"""

import asyncio
import sys


def attr(obj, *names):
    for n in names:
        if hasattr(obj, n):
            return getattr(obj, n)
    return None


def check_openai(base, ws, key, query, expected):
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1/workspaces/{ws}/openai/v1", api_key=key, max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert "default" in ids, f"models: {ids}"
    messages = [{"role": "user", "content": query}]
    r = client.chat.completions.create(model="default", messages=messages)
    text = r.choices[0].message.content
    assert expected in text, f"completion: {text!r}"
    assert r.usage.total_tokens > 0, r.usage
    stream = client.chat.completions.create(model="default", messages=messages, stream=True)
    streamed = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    assert expected in streamed, f"stream: {streamed!r}"
    # The agent's id works as the model name too.
    agent_id = next(m for m in client.models.list().data if m.id == "default").model_extra["agent_id"]
    r = client.chat.completions.create(model=agent_id, messages=messages)
    assert expected in r.choices[0].message.content
    return 4


async def check_mcp(base, ws, key, query, expected):
    from mcp import ClientSession
    from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http:
        async with streamable_http_client(f"{base}/v1/workspaces/{ws}/mcp", http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                info = attr(init, "server_info", "serverInfo")
                assert info.name == "enclave", info
                tools = [t.name for t in (await session.list_tools()).tools]
                assert {"search", "fulltext_search", "vector_search", "get_document"} <= set(tools), tools
                result = await session.call_tool("search", {"query": query, "limit": 3})
                assert not attr(result, "is_error", "isError"), result
                text = result.content[0].text
                assert expected in text, f"search: {text!r}"
    return 3


def main():
    base, ws, key, query, expected = sys.argv[1:6]
    passed = check_openai(base, ws, key, query, expected)
    print(f"openai {__import__('openai').__version__}: models, completion, stream, agent id ok")
    passed += asyncio.run(check_mcp(base, ws, key, query, expected))
    print("mcp: initialize, tools/list, tools/call search ok")
    print(f"clients: {passed} passed, 0 failed")


if __name__ == "__main__":
    main()
