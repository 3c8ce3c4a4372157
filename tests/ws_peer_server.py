#!/usr/bin/python3
"""A WebSocket echo server on python's websockets (Debian's
python3-websockets), a peer for keel's conformance tables and interop
tests.

usage: ws_peer_server.py [--host H] [--port P] [--deflate] [--max-message N]
    --port P           0 (the default): any free port
    --deflate          accept permessage-deflate offers (every valid one:
                       no window or context limits of the server's own)
    --max-message N    the largest message, after inflating (default 1 MiB)

Prints `ws-peer-server listening on HOST:PORT (websockets VERSION)` once
listening, echoes every message with its opcode (text as text, binary as
binary), and stops on SIGTERM or SIGINT with status 0."""

import argparse
import asyncio
import signal

import websockets
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory


async def echo(ws, path=None):
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--deflate", action="store_true")
    parser.add_argument("--max-message", type=int, default=1 << 20)
    args = parser.parse_args()
    extensions = [ServerPerMessageDeflateFactory()] if args.deflate else None
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with websockets.serve(echo, args.host, args.port, compression=None,
                                extensions=extensions, max_size=args.max_message,
                                ping_interval=None, close_timeout=2) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print("ws-peer-server listening on %s:%d (websockets %s)" % (
            host, port, websockets.__version__), flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
