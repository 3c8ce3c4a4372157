#!/usr/bin/python3
"""A python `websockets` client against a WebSocket echo server (keel's
examples/ws-echo-server): text and binary messages of many sizes, a
fragmented one, pings, the close handshake; with --deflate it offers
permessage-deflate and checks that it was agreed; with --cafile it talks
wss:// and verifies the server. Prints one line per check and exits 0 only
if all pass. Run with Debian's /usr/bin/python3 (python3-websockets)."""
import argparse
import asyncio
import os
import ssl
import sys

import websockets

SIZES = [0, 1, 125, 126, 127, 1000, 65535, 65536, 200000, 1000000]


async def run(args):
    ctx = None
    if args.url.startswith("wss://"):
        ctx = ssl.create_default_context(cafile=args.cafile)
    comp = "deflate" if args.deflate else None
    failures = 0
    async with websockets.connect(args.url, ssl=ctx, compression=comp, max_size=2 ** 21,
                                  server_hostname=args.server_name) as ws:
        exts = ws.response_headers.get("Sec-WebSocket-Extensions", "")
        if args.deflate != ("permessage-deflate" in exts):
            print(f"FAIL extensions: {exts!r}")
            failures += 1
        for n in SIZES:
            data = os.urandom(n)
            await ws.send(data)
            got = await ws.recv()
            ok = got == data
            print(("PASS" if ok else "FAIL") + f" binary {n}")
            failures += not ok
            text = ("é€😀x" * (n // 10 + 1))[: max(n // 4, 1)]
            await ws.send(text)
            got = await ws.recv()
            ok = got == text
            print(("PASS" if ok else "FAIL") + f" text {len(text.encode())}")
            failures += not ok
        await ws.send(["frag", "mented ", "messa", "ge"])
        got = await ws.recv()
        ok = got == "fragmented message"
        print(("PASS" if ok else "FAIL") + " fragmented")
        failures += not ok
        pong = await ws.ping(b"payload")
        await asyncio.wait_for(pong, 5)
        print("PASS ping")
        await ws.close(4001, "bye")
        ok = ws.close_code == 4001
        print(("PASS" if ok else "FAIL") + f" close code {ws.close_code}")
        failures += not ok
    return failures


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--deflate", action="store_true")
    p.add_argument("--cafile")
    p.add_argument("--server-name")
    args = p.parse_args()
    failures = asyncio.run(asyncio.wait_for(run(args), 60))
    print(f"{failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
