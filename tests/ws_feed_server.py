#!/usr/bin/python3
"""The WebSocket feed of examples/ws-feed-server.c on python's websockets
(Debian's python3-websockets, 10.x), a second peer for keel's clients.

usage: ws_feed_server.py [--host H] [--port P] [--token T] [--topics a,b,c]
                         [--rate N] [--log FILE] [--chaos-drop-every MS]
    --port P                0 (the default): any free port
    --token T               the token auth wants (default "secret")
    --topics a,b,c          the topics (default a,b,c)
    --rate N                updates per second per topic (default 10; 0: none)
    --log FILE              append a JSON line per answered request
                            {"conn":N,"id":ID,"method":M}, once its answer is
                            written, and per event {"conn":N,"event":E}
                            (open, auth, drop, close)
    --chaos-drop-every MS   drop each connection (TCP closed, no close frame)
                            after a random time in [MS/2, 3MS/2]

The protocol is the one examples/ws-feed-server.c describes: auth, sub
(with "from"), unsub, req (echo, sleep), updates numbered per topic from 1,
the last 1000 kept per topic. Slow clients as there: a connection keeps a
cursor per topic into the shared ring, and one that falls more than 1000
updates behind, or takes more than 10 s to take one message, is closed with
1008 "too slow" (a "drop" in the log).

Prints `ws-feed-server listening on HOST:PORT` once listening, and stops on
SIGTERM or SIGINT (every connection closed with 1001) with status 0."""

import argparse
import asyncio
import collections
import http
import json
import random
import signal

import websockets

RING_SIZE = 1000
MAX_SLEEPS = 100
MAX_SLEEP_MS = 60000
SEND_TIMEOUT = 10.0


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class TooSlow(Exception):
    pass


class Topic:
    def __init__(self, name):
        self.name = name
        self.last_seq = 0
        self.ring = collections.deque(maxlen=RING_SIZE)  # texts of the updates kept
        self.subscribers = set()

    def oldest(self):
        return max(1, self.last_seq - RING_SIZE + 1)

    def text(self, seq):
        return self.ring[seq - self.oldest()]

    def publish(self):
        self.last_seq += 1
        self.ring.append(dumps({"op": "update", "topic": self.name, "seq": self.last_seq,
                                "data": {"value": random.randrange(1000)}}))
        for conn in self.subscribers:
            conn.wake.set()


class Subscription:
    def __init__(self, next_seq):
        self.next_seq = next_seq


class Feed:
    def __init__(self, args):
        self.token = args.token
        self.topics = {name: Topic(name) for name in args.topics.split(",")}
        self.rate = args.rate
        self.chaos_ms = args.chaos_drop_every
        self.conns = 0
        self.log_file = open(args.log, "a", encoding="utf-8") if args.log else None

    def log(self, obj):
        if self.log_file:
            self.log_file.write(dumps(obj) + "\n")
            self.log_file.flush()

    async def ticker(self):
        loop = asyncio.get_running_loop()
        next_time = loop.time()
        while True:
            next_time += 1 / self.rate
            await asyncio.sleep(max(0, next_time - loop.time()))
            for topic in self.topics.values():
                topic.publish()


class Conn:
    def __init__(self, feed, ws):
        feed.conns += 1
        self.feed = feed
        self.ws = ws
        self.number = feed.conns
        self.authed = False
        self.subs = {}  # topic name -> Subscription
        self.wake = asyncio.Event()
        self.sleepers = set()
        self.dropped = False

    def log_event(self, event):
        self.feed.log({"conn": self.number, "event": event})

    async def send(self, obj):
        try:
            await asyncio.wait_for(self.ws.send(obj if isinstance(obj, str) else dumps(obj)),
                                   SEND_TIMEOUT)
        except asyncio.TimeoutError:
            raise TooSlow() from None

    async def too_slow(self):
        self.dropped = True
        await self.ws.close(1008, "too slow")

    async def answer(self, req_id, method, result=None, error=None):
        """Answers a request, and logs it once the answer is written."""
        await self.send({"id": req_id, "error": error} if error
                        else {"id": req_id, "result": result})
        self.feed.log({"conn": self.number, "id": req_id, "method": method})

    async def answer_op(self, op, topic, error=None):
        msg = {"op": op, "topic": topic, "ok": not error}
        if error:
            msg["error"] = error
        await self.send(msg)

    # ---- Updates -----------------------------------------------------------

    async def push(self):
        """Sends the client every update it is owed, when the ticker wakes it."""
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                for name in list(self.subs):
                    await self.push_topic(self.feed.topics[name])
        except TooSlow:
            await self.too_slow()
        except websockets.ConnectionClosed:
            pass

    async def push_topic(self, topic):
        sub = self.subs.get(topic.name)
        # A new subscription (sub again, or unsub) replaces or removes sub.
        while self.subs.get(topic.name) is sub and sub.next_seq <= topic.last_seq:
            if sub.next_seq < topic.oldest():
                raise TooSlow()
            await self.send(topic.text(sub.next_seq))
            sub.next_seq += 1

    # ---- Messages ------------------------------------------------------------

    async def on_auth(self, msg):
        ok = msg.get("token") == self.feed.token
        await self.send({"op": "auth", "ok": True, "conn": self.number} if ok
                        else {"op": "auth", "ok": False, "error": "bad token"})
        if ok and not self.authed:
            self.authed = True
            self.log_event("auth")

    async def on_topic_op(self, op, msg):
        name = msg.get("topic")
        topic = self.feed.topics.get(name) if isinstance(name, str) else None
        if not self.authed:
            return await self.answer_op(op, name, "not authenticated")
        if topic is None:
            return await self.answer_op(op, name, "unknown topic")
        if op == "unsub":
            self.subs.pop(name, None)
            topic.subscribers.discard(self)
            return await self.answer_op(op, name)
        start = msg.get("from")
        if start is not None and not (is_number(start) and 0 <= start < 1e18):
            return await self.answer_op(op, name, "from: an update number")
        next_seq = topic.last_seq + 1
        if start and start < next_seq:
            next_seq = max(int(start), topic.oldest())
        sub = Subscription(next_seq)
        # The answer goes out before any update of the subscription.
        await self.answer_op(op, name)
        self.subs[name] = sub
        topic.subscribers.add(self)
        self.wake.set()

    async def on_req(self, msg):
        req_id, method, params = msg.get("id"), msg.get("method"), msg.get("params")
        if not isinstance(method, str):
            method = None
        if not self.authed:
            return await self.answer(req_id, method, error="not authenticated")
        if method == "echo":
            return await self.answer(req_id, method, result=params)
        if method != "sleep":
            return await self.answer(req_id, method, error="unknown method")
        ms = params.get("ms") if isinstance(params, dict) else None
        if not (is_number(ms) and 0 <= ms <= MAX_SLEEP_MS):
            return await self.answer(req_id, method,
                                     error="params.ms: a number of milliseconds to 60000")
        if len(self.sleepers) >= MAX_SLEEPS:
            return await self.answer(req_id, method, error="too many requests pending")
        task = asyncio.create_task(self.sleep(req_id, params, ms))
        self.sleepers.add(task)
        task.add_done_callback(self.sleepers.discard)

    async def sleep(self, req_id, params, ms):
        await asyncio.sleep(ms / 1000)
        try:
            await self.answer(req_id, "sleep", result=params)
        except TooSlow:
            await self.too_slow()
        except websockets.ConnectionClosed:
            pass

    async def on_message(self, message):
        """Handles one message; False when the connection is to close."""
        if isinstance(message, bytes):
            await self.ws.close(1003, "text frames only")
            return False
        try:
            msg = json.loads(message)
        except (ValueError, RecursionError):
            await self.ws.close(1007, "not JSON (or nested too deep)")
            return False
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "auth":
            await self.on_auth(msg)
        elif op in ("sub", "unsub"):
            await self.on_topic_op(op, msg)
        elif op == "req":
            await self.on_req(msg)
        else:
            await self.send({"id": msg.get("id") if isinstance(msg, dict) else None,
                             "error": "unknown op"})
        return True

    # ---- The connection ------------------------------------------------------

    async def chaos(self):
        ms = self.feed.chaos_ms
        await asyncio.sleep(random.uniform(ms / 2, 3 * ms / 2) / 1000)
        self.dropped = True
        self.ws.transport.abort()

    async def run(self):
        self.log_event("open")
        tasks = [asyncio.create_task(self.push())]
        if self.feed.chaos_ms:
            tasks.append(asyncio.create_task(self.chaos()))
        try:
            async for message in self.ws:
                if not await self.on_message(message):
                    break
        except TooSlow:
            await self.too_slow()
        except websockets.ConnectionClosed:
            pass
        finally:
            for task in tasks + list(self.sleepers):
                task.cancel()
            for topic in self.feed.topics.values():
                topic.subscribers.discard(self)
            self.log_event("drop" if self.dropped else "close")


async def not_found_but_root(path, request_headers):
    if path.split("?", 1)[0] != "/":
        return http.HTTPStatus.NOT_FOUND, [], b"not found\n"
    return None


def topic_name_ok(name):
    """As examples/ws-feed-server.c: 1 to 64 printable ASCII characters but
    for '"' and '\\'."""
    return 1 <= len(name) <= 64 and all("!" <= c <= "~" and c not in "\"\\" for c in name)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="secret")
    parser.add_argument("--topics", default="a,b,c")
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--log")
    parser.add_argument("--chaos-drop-every", type=int, default=0, metavar="MS")
    args = parser.parse_args()
    names = args.topics.split(",")
    if len(set(names)) != len(names) or not all(topic_name_ok(name) for name in names):
        parser.error("--topics: names, each once, separated by commas")
    if args.rate < 0 or args.chaos_drop_every < 0:
        parser.error("--rate and --chaos-drop-every are not negative")
    return args


async def main():
    args = parse_args()
    feed = Feed(args)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)

    async def handler(ws, path=None):
        await Conn(feed, ws).run()

    ticker = asyncio.create_task(feed.ticker()) if args.rate > 0 else None
    async with websockets.serve(handler, args.host, args.port, compression=None,
                                max_size=64 * 1024, ping_interval=None, close_timeout=2,
                                process_request=not_found_but_root) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print("ws-feed-server listening on %s:%d" % (host, port), flush=True)
        await stop
    if ticker:
        ticker.cancel()


if __name__ == "__main__":
    asyncio.run(main())
