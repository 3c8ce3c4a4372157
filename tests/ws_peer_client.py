#!/usr/bin/python3
"""A WebSocket echo client on python's websockets (Debian's
python3-websockets): the stand-in for keel's own in the client
conformance table (tests/ws_conformance_client.py), and a peer for interop
tests.

usage: ws_peer_client.py [--no-deflate] [--max-message N] URL

Connects to URL (offering permessage-deflate with client_max_window_bits
unless --no-deflate), echoes every message with its opcode until the
connection closes, then prints one line and exits 0:
    close CODE   the close code received; or the one sent, when this side
                 started the close (it failed the connection: 1002,
                 1007, 1009...); 1005 for a close without a code
    error NAME   the handshake failed (EPROTO) or the connection was lost
                 without a close (ECONNRESET), or an errno name
"""

import argparse
import asyncio
import errno
import sys

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


def close_line(ws):
    rcvd, sent = ws.close_rcvd, ws.close_sent
    if rcvd is not None and (sent is None or ws.close_rcvd_then_sent):
        return "close %d" % rcvd.code
    if sent is not None:
        return "close %d" % sent.code
    return "error ECONNRESET"


async def run(url, deflate, max_message):
    extensions = [ClientPerMessageDeflateFactory(client_max_window_bits=True)] if deflate \
        else None
    try:
        ws = await websockets.connect(url, compression=None, extensions=extensions,
                                      max_size=max_message, ping_interval=None,
                                      close_timeout=2, open_timeout=5)
    except websockets.InvalidHandshake:
        return "error EPROTO"
    except asyncio.TimeoutError:
        return "error ETIMEDOUT"
    except OSError as exc:
        return "error %s" % errno.errorcode.get(exc.errno, "EIO")
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass
    await ws.wait_closed()
    return close_line(ws)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-deflate", action="store_true")
    parser.add_argument("--max-message", type=int, default=1 << 20)
    parser.add_argument("url")
    args = parser.parse_args()
    print(asyncio.run(run(args.url, not args.no_deflate, args.max_message)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
