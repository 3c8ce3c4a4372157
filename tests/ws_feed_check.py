#!/usr/bin/python3
"""Checks a WebSocket feed server (examples/ws-feed-server.c,
tests/ws_feed_server.py) with python's websockets client.

usage: ws_feed_check.py --url URL [--token T] [--topic T] [--log FILE]
                        [--expect-drop MS]

A session: a request and a sub before auth are refused; a wrong token gets
ok:false, the right one ok:true and the connection's number; an unknown
topic is refused; updates of a topic come numbered one by one; none come
after unsub; sub with "from" replays from that update on (inclusive), then
goes on live; echo answers its params, an unknown method an error, and a
sleep's answer comes after those of echoes sent after it. Then a message
that is not JSON must close the connection with 1007 or get an error, and
the server must still serve a new connection.

With --log FILE (the server's --log), every request answered must be in it
under the connection's number, with the connection's open, auth and close
events. With --expect-drop MS (a server run with --chaos-drop-every MS),
the check is instead that a subscribed connection is dropped without a
close frame (1006) within 3MS/2 and some slack, and logged as a drop.

Prints one line per step and exits 0, or prints FAIL and why and exits 1."""

import argparse
import asyncio
import json
import sys
import time

import websockets

TIMEOUT = 30  # seconds for any one answer: generous, for a loaded machine


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


class Session:
    """A connection that reads messages in order, checking the updates of
    the topic it follows as they pass."""

    def __init__(self, ws, topic):
        self.ws = ws
        self.topic = topic
        self.last_seq = None  # of the topic's updates, while subscribed
        self.subscribed = False
        self.updates = 0

    async def send(self, obj):
        await self.ws.send(json.dumps(obj))

    async def next(self):
        """The next message that is not an update (updates are checked)."""
        while True:
            try:
                text = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
            except asyncio.TimeoutError:
                raise CheckFailed("no message within %d s" % TIMEOUT) from None
            msg = json.loads(text)
            if msg.get("op") != "update":
                return msg
            self.on_update(msg)

    def on_update(self, msg):
        check(msg.get("topic") == self.topic, "an update of a topic not subscribed: %r" % msg)
        check(self.subscribed, "an update after unsub: %r" % msg)
        check(isinstance(msg.get("seq"), int) and isinstance(msg.get("data"), dict),
              "a malformed update: %r" % msg)
        if self.last_seq is not None:
            check(msg["seq"] == self.last_seq + 1,
                  "update %d after %d: not one by one" % (msg["seq"], self.last_seq))
        self.last_seq = msg["seq"]
        self.updates += 1

    async def expect(self, want, what):
        msg = await self.next()
        check(msg == want, "%s: got %r, want %r" % (what, msg, want))
        print("ok %s" % what)
        return msg

    async def updates_until(self, done, what):
        """Reads updates (only) until done() holds."""
        deadline = time.monotonic() + TIMEOUT
        while not done():
            left = deadline - time.monotonic()
            check(left > 0, "%s: not within %d s" % (what, TIMEOUT))
            try:
                text = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                raise CheckFailed("%s: not within %d s" % (what, TIMEOUT)) from None
            msg = json.loads(text)
            check(msg.get("op") == "update", "an unexpected message: %r" % msg)
            self.on_update(msg)

    async def unsub(self):
        await self.send({"op": "unsub", "topic": self.topic})
        await self.expect({"op": "unsub", "topic": self.topic, "ok": True}, "unsub")
        self.subscribed = False

    async def quiet(self, seconds):
        """Reads for a while: only updates may come (and are checked)."""
        try:
            msg = await asyncio.wait_for(self.next(), seconds)
        except asyncio.TimeoutError:
            return
        raise CheckFailed("an unexpected message: %r" % msg)


async def before_auth(s, token):
    await s.send({"id": 100, "op": "req", "method": "echo", "params": 1})
    await s.expect({"id": 100, "error": "not authenticated"}, "req before auth refused")
    await s.send({"op": "sub", "topic": s.topic})
    await s.expect({"op": "sub", "topic": s.topic, "ok": False, "error": "not authenticated"},
                   "sub before auth refused")
    await s.send({"op": "auth", "token": token + "-wrong"})
    await s.expect({"op": "auth", "ok": False, "error": "bad token"}, "wrong token refused")
    await s.send({"op": "auth", "token": token})
    msg = await s.next()
    check(msg.get("op") == "auth" and msg.get("ok") is True and isinstance(msg.get("conn"), int)
          and msg["conn"] >= 1, "auth: got %r" % msg)
    print("ok auth, connection %d" % msg["conn"])
    return msg["conn"]


async def subscriptions(s):
    await s.send({"op": "sub", "topic": "no-such-topic"})
    msg = await s.next()
    check(msg.get("ok") is False and msg.get("topic") == "no-such-topic",
          "unknown topic: got %r" % msg)
    print("ok unknown topic refused")
    await s.send({"op": "sub", "topic": s.topic})
    await s.expect({"op": "sub", "topic": s.topic, "ok": True}, "sub")
    s.subscribed = True
    goal = s.updates + 5
    await s.updates_until(lambda: s.updates >= goal, "5 updates")
    first, last = s.last_seq - 4, s.last_seq
    print("ok updates %d..%d one by one" % (first, last))
    await s.unsub()
    await s.quiet(0.5)  # on_update fails if an update comes
    print("ok no update after unsub")
    await s.send({"op": "sub", "topic": s.topic, "from": first})
    await s.expect({"op": "sub", "topic": s.topic, "ok": True}, "sub from %d" % first)
    # The first update must be `first` again; then they go on one by one,
    # past the last one seen before unsub, for a second at least.
    s.subscribed, s.last_seq = True, first - 1
    until = time.monotonic() + 1
    await s.updates_until(lambda: s.last_seq > last + 1 and time.monotonic() > until,
                          "updates after sub from %d" % first)
    print("ok sub from %d: updates %d..%d one by one" % (first, first, s.last_seq))


async def requests(s):
    """Returns the ids answered."""
    params = {"text": "héllo ✓", "list": [1, 2.5, None, True], "nested": {"a": {"b": []}}}
    await s.send({"id": 1, "op": "req", "method": "sleep", "params": {"ms": 1500}})
    await s.send({"id": 2, "op": "req", "method": "echo", "params": params})
    await s.send({"id": 3, "op": "req", "method": "echo", "params": [params, "x"]})
    await s.send({"id": 4, "op": "req", "method": "no-such-method", "params": {}})
    answers = [await s.next() for _ in range(4)]
    order = [a.get("id") for a in answers]
    check(order == [2, 3, 4, 1], "answers in the order %r, want [2, 3, 4, 1]" % order)
    check(answers[0] == {"id": 2, "result": params}, "echo 2: got %r" % answers[0])
    check(answers[1] == {"id": 3, "result": [params, "x"]}, "echo 3: got %r" % answers[1])
    check(answers[2] == {"id": 4, "error": "unknown method"}, "unknown method: %r" % answers[2])
    check("result" in answers[3] and "error" not in answers[3], "sleep: got %r" % answers[3])
    print("ok echo, unknown method, then the sleep sent before them")
    return [100, 2, 3, 4, 1]


async def malformed(url, token):
    async with websockets.connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        await ws.send('{"op": "auth", "token": ')
        try:
            msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            check("error" in msg, "not JSON: got %r" % msg)
            print("ok not JSON: an error")
        except websockets.ConnectionClosed as e:
            check(e.code == 1007, "not JSON: closed with %s, want 1007" % e.code)
            print("ok not JSON: closed with 1007")
    async with websockets.connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        await ws.send(json.dumps({"op": "auth", "token": token}))
        msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        check(msg.get("ok") is True, "auth after the malformed message: %r" % msg)
        print("ok the server still serves")


def check_log(path, conn, ids, events):
    """Waits (the last events come as the server closes) for the lines."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            with open(path, encoding="utf-8") as f:
                lines = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError) as e:
            raise CheckFailed("log %s: %s" % (path, e)) from None
        mine = [line for line in lines if line.get("conn") == conn]
        logged = {json.dumps(line["id"]) for line in mine if "id" in line}
        missing = [i for i in ids if json.dumps(i) not in logged]
        missing += [e for e in events if not any(line.get("event") == e for line in mine)]
        if not missing:
            print("ok log: requests %s and events %s of connection %d" % (
                ",".join(map(str, ids)), ",".join(events), conn))
            return
        if time.monotonic() > deadline:
            raise CheckFailed("log %s: connection %d: missing %r" % (path, conn, missing))
        time.sleep(0.1)


async def session(args):
    async with websockets.connect(args.url, open_timeout=TIMEOUT,
                                  close_timeout=TIMEOUT) as ws:
        s = Session(ws, args.topic)
        conn = await before_auth(s, args.token)
        await subscriptions(s)
        ids = await requests(s)  # with the updates going on
        await s.unsub()
    await malformed(args.url, args.token)
    if args.log:
        check_log(args.log, conn, ids, ["open", "auth", "close"])
    print("answered conn=%d ids=%s" % (conn, ",".join(map(str, ids))))


async def expect_drop(args):
    start = time.monotonic()
    async with websockets.connect(args.url, open_timeout=TIMEOUT,
                                  close_timeout=TIMEOUT) as ws:
        s = Session(ws, args.topic)
        await s.send({"op": "auth", "token": args.token})
        conn = (await s.next()).get("conn")
        check(isinstance(conn, int), "auth failed")
        await s.send({"op": "sub", "topic": s.topic})
        s.subscribed = True
        limit = 1.5 * args.expect_drop / 1000 + TIMEOUT
        try:
            while True:
                check(time.monotonic() - start < limit, "not dropped within %.1f s" % limit)
                await asyncio.wait_for(s.next(), limit)
        except websockets.ConnectionClosed as e:
            check(e.code == 1006, "closed with %s, want 1006 (no close frame)" % e.code)
        except asyncio.TimeoutError:
            raise CheckFailed("not dropped within %.1f s" % limit) from None
    print("ok dropped after %.2f s without a close frame" % (time.monotonic() - start))
    if args.log:
        check_log(args.log, conn, [], ["open", "auth", "drop"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default="secret")
    parser.add_argument("--topic", default="a")
    parser.add_argument("--log")
    parser.add_argument("--expect-drop", type=int, metavar="MS")
    args = parser.parse_args()
    try:
        asyncio.run(expect_drop(args) if args.expect_drop else session(args))
    except CheckFailed as e:
        print("FAIL %s" % e)
        return 1
    except (OSError, websockets.WebSocketException, asyncio.TimeoutError) as e:
        print("FAIL %s: %s" % (type(e).__name__, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
