#!/usr/bin/python3
# WebSocket conformance table for a SERVER (RFC 6455, RFC 7692), after the
# Autobahn testsuite's categories: a raw-socket client (socket, struct,
# os.urandom and zlib; no WebSocket library) drives an echo server that
# answers every message with its opcode.
#
#   0  opening handshake: the 101 and its fields; a bad or missing
#      Sec-WebSocket-Key, Upgrade or Connection is 400 (or 426), version 8
#      is 426 with Sec-WebSocket-Version: 13, POST is 400 (or 405);
#      subprotocols and extensions the server has none of are not chosen
#  1  framing        2  pings        3  reserved bits   4  opcodes
#  5  fragmentation  6  UTF-8        7  close           9  limits
# 10  fragment sizes  (tests/ws_conformance_tables.py, shared with the
#      client table)
# 12  permessage-deflate messages: payload kinds and sizes, compressed and
#     plain on one connection, RFC 7692's examples, RSV1 where it may not
#     be (1002), a small frame inflating beyond --max-message (1009)
# 13  permessage-deflate parameters: every combination of
#     client_no_context_takeover, server_no_context_takeover,
#     client_max_window_bits (absent, bare, 9..15) and
#     server_max_window_bits (absent, 9..15): the response must follow
#     RFC 7692 §7.1 and the echoes must inflate with what it agreed
#
# Expectations are RFC 6455's, strictly: a protocol error is a close frame
# with its code (1002, 1007, 1009), then the server closes TCP; a TCP close
# without the close frame is a FAIL (--lenient accepts it). A close with a
# valid code is answered with the same code (an empty close: with none or
# 1000). The text checks fail fast: 1007 must come right after the frame
# (or the byte) that no valid text can have, without the rest.
#
# Categories 12 and 13 need the server started with permessage-deflate
# (--deflate here); without it, category 12 checks that offers are
# declined and RSV1 stays a protocol error.
#
# One line per case: `PASS id description` or `FAIL id description
# (expected X, got Y)`; then the counts per category and a last line
# `N passed, M failed`. Exit status 0 only if every case passed, 1 if not,
# 2 on a usage error. Every socket operation has a deadline (--timeout).
#
# usage: tests/ws_conformance.py --url ws://127.0.0.1:PORT/ [options]
#   --deflate          the server was started with permessage-deflate
#   --max-message N    the server's message limit (default 1 MiB)
#   --category C       only these categories (repeatable, comma-separated)
#   --case ID          only this case or group (e.g. 6.4), repeatable
#   --list             list the cases and exit
#   --timeout S        seconds to wait for each answer (default 2)
#   --lenient          accept a TCP close without a close frame for a
#                      protocol error (for peers that do so)
"""tests/ws_conformance.py: WebSocket conformance table for a server (see the
header comment)."""

import argparse
import base64
import os
import socket
import sys
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ws_conformance_lib import CaseFail, Context, Session, head_bytes, read_head  # noqa: E402
from ws_conformance_steps import (Case, Expect, ExpectClose, Report, Send,  # noqa: E402
                                  SendMessage, add_common_arguments, list_cases, run_steps,
                                  selected, split_list)
from ws_conformance_tables import (common_cases, deflate_message_cases, messages_of,  # noqa: E402
                                   parameter_steps)
from ws_wire import (Pmd, PmdParams, RSV1, TEXT, accept_for, encode_frame,  # noqa: E402
                     parse_extensions, window_bits)

# ---- The opening handshake -------------------------------------------------------------

class Target:
    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError("not a ws:// URL: %s" % url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self.authority = "%s:%d" % (self.host, self.port)


def new_key(nbytes=16):
    return base64.b64encode(os.urandom(nbytes)).decode()


def request_head(target, key, fields=None, method="GET", version="HTTP/1.1"):
    """The upgrade request, with fields as head_bytes takes them."""
    base = [("Host", target.authority), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    return head_bytes("%s %s %s" % (method, target.path, version), base, fields)


def read_response(sock, ctx):
    """Reads the response head: Head with status and reason, or raises
    CaseFail."""
    resp = read_head(sock, ctx.timeout, "a response")
    parts = resp.start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise CaseFail("a status line", repr(resp.start))
    resp.status, resp.reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
    return resp


def exchange(target, ctx, head):
    """Connects, writes head, reads the response: (socket, Response)."""
    try:
        sock = socket.create_connection((target.host, target.port), timeout=ctx.timeout)
    except OSError as exc:
        raise CaseFail("a connection", str(exc)) from None
    try:
        sock.sendall(head)
        return sock, read_response(sock, ctx)
    except BaseException:
        sock.close()
        raise


def check_upgrade(resp, key):
    """The fields of a 101 (RFC 6455 §4.2.2)."""
    expected = "101 with Upgrade: websocket, Connection: Upgrade and the key's accept"
    if resp.status != 101:
        raise CaseFail(expected, "%d %s" % (resp.status, resp.reason))
    if resp.tokens("Upgrade") != ["websocket"]:
        raise CaseFail(expected, "Upgrade: %s" % resp.value("Upgrade"))
    if "upgrade" not in resp.tokens("Connection"):
        raise CaseFail(expected, "Connection: %s" % resp.value("Connection"))
    if resp.values("Sec-WebSocket-Accept") != [accept_for(key)]:
        raise CaseFail(expected, "Sec-WebSocket-Accept: %s" % resp.value("Sec-WebSocket-Accept"))


def open_session(target, ctx, fields=None, offers=None, deflate=True, first_bytes=b""):
    """A connection upgraded with fields (and a permessage-deflate offer
    string): Session. deflate: the server must accept one of the offers
    (False: it must decline them)."""
    key = new_key()
    if offers:
        fields = dict(fields or {}, **{"Sec-WebSocket-Extensions": offers})
    sock, resp = exchange(target, ctx, request_head(target, key, fields) + first_bytes)
    try:
        check_upgrade(resp, key)
        if resp.values("Sec-WebSocket-Protocol"):
            raise CaseFail("no subprotocol (none was offered)",
                           "Sec-WebSocket-Protocol: %s" % resp.value("Sec-WebSocket-Protocol"))
        pmd = None
        answer = resp.values("Sec-WebSocket-Extensions")
        if offers and deflate:
            params = check_pmd_response(offers, answer)
            pmd = Pmd(params, client=True)
        elif answer:
            raise CaseFail("no extension", "Sec-WebSocket-Extensions: %s" % ", ".join(answer))
    except BaseException:
        sock.close()
        raise
    return Session(sock, True, ctx, resp.rest, pmd)


# ---- permessage-deflate negotiation -------------------------------------------------------

PMD_PARAMS = ("server_no_context_takeover", "client_no_context_takeover",
              "server_max_window_bits", "client_max_window_bits")


def check_pmd_response(offers, answer):
    """PmdParams of the server's acceptance, which must be one
    permessage-deflate that accepts one of the offers under RFC 7692
    §7.1; else CaseFail."""
    expected = "permessage-deflate accepted as RFC 7692 §7.1 says"
    try:
        exts = parse_extensions(answer)
        offered = [dict(p) for name, p in parse_extensions(
            offers if isinstance(offers, list) else [offers]) if name == "permessage-deflate"]
    except ValueError as exc:
        raise CaseFail(expected, "Sec-WebSocket-Extensions: %s (%s)" % (answer, exc)) from None
    got = "Sec-WebSocket-Extensions: %s" % (", ".join(answer) if answer else "(none)")
    if len(exts) != 1 or exts[0][0] != "permessage-deflate":
        raise CaseFail(expected, got)
    names = [n for n, _ in exts[0][1]]
    if len(set(names)) != len(names) or any(n not in PMD_PARAMS for n in names):
        raise CaseFail(expected, got)
    params = dict(exts[0][1])
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in params and params[flag] is not None:
            raise CaseFail(expected, got)
    bits = {}
    for name in ("server_max_window_bits", "client_max_window_bits"):
        if name in params:
            bits[name] = window_bits(params[name])
            if bits[name] is None:
                raise CaseFail(expected, got)
    for offer in offered:
        if "server_no_context_takeover" in offer and "server_no_context_takeover" not in params:
            continue
        if "server_max_window_bits" in offer:
            asked = window_bits(offer["server_max_window_bits"])
            if "server_max_window_bits" not in bits or bits["server_max_window_bits"] > asked:
                continue
        if "client_max_window_bits" in bits and "client_max_window_bits" not in offer:
            continue
        return PmdParams("server_no_context_takeover" in params,
                         "client_no_context_takeover" in params,
                         bits.get("server_max_window_bits", 15),
                         bits.get("client_max_window_bits", 15))
    raise CaseFail(expected + " for one of the offers", got)


def offer_string(cnct=False, snct=False, cmwb=None, smwb=None):
    parts = ["permessage-deflate"]
    if cnct:
        parts.append("client_no_context_takeover")
    if snct:
        parts.append("server_no_context_takeover")
    if cmwb == "bare":
        parts.append("client_max_window_bits")
    elif cmwb:
        parts.append("client_max_window_bits=%d" % cmwb)
    if smwb:
        parts.append("server_max_window_bits=%d" % smwb)
    return "; ".join(parts)


# ---- 0 the opening handshake ---------------------------------------------------------------

def expect_status(statuses, fields=None, method="GET", version="HTTP/1.1", key=None,
                  check=None):
    """A case body: the request (with fields) must be refused with one of
    statuses; check(resp) may look further."""
    def run(target, ctx):
        head = request_head(target, key if key is not None else new_key(), fields, method,
                            version)
        sock, resp = exchange(target, ctx, head)
        sock.close()
        if resp.status not in statuses:
            raise CaseFail(" or ".join(map(str, statuses)), "%d %s" % (resp.status, resp.reason))
        if check:
            check(resp)
    return run


def needs_version_13(resp):
    if "13" not in resp.tokens("Sec-WebSocket-Version"):
        raise CaseFail("426 with Sec-WebSocket-Version: 13",
                       "Sec-WebSocket-Version: %s" % resp.value("Sec-WebSocket-Version"))


def echo_on(fields=None, first=False):
    """A case body: the upgrade succeeds and a message is echoed (first:
    its frame goes in the same write as the request)."""
    def run(target, ctx):
        frame = encode_frame(TEXT, b"first", key=os.urandom(4)) if first else b""
        s = open_session(target, ctx, fields, first_bytes=frame)
        steps = [Expect(TEXT, b"first")] if first else [SendMessage(TEXT, b"Hello"),
                                                        Expect(TEXT, b"Hello")]
        try:
            run_steps(s, steps)
        finally:
            s.sock.close()
    return run


def handshake_cases():
    bad, refused = (400,), (400, 426)
    no_upgrade = {"Upgrade": None, "Connection": None}
    rows = [
        ("a valid upgrade: 101, then an echo", echo_on()),
        ("field names in lower case, Upgrade: WebSocket, Connection: keep-alive, Upgrade",
         echo_on({"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade",
                  "Origin": "http://127.0.0.1"})),
        ("the first frame in the request's write: echoed", echo_on(first=True)),
        ("no Sec-WebSocket-Key: 400", expect_status(bad, {"Sec-WebSocket-Key": None})),
        ("a Sec-WebSocket-Key not in base64: 400",
         expect_status(bad, key="not base64 at all!!!!!==")),
        ("a Sec-WebSocket-Key of 15 bytes: 400", expect_status(bad, key=new_key(15))),
        ("a Sec-WebSocket-Key of 17 bytes: 400", expect_status(bad, key=new_key(17))),
        ("two Sec-WebSocket-Key fields: 400",
         expect_status(bad, {"Sec-WebSocket-Key": [new_key(), new_key()]})),
        ("Sec-WebSocket-Version 8: 426 with Sec-WebSocket-Version: 13",
         expect_status((426,), {"Sec-WebSocket-Version": "8"}, check=needs_version_13)),
        ("Sec-WebSocket-Version 14: 426 with Sec-WebSocket-Version: 13",
         expect_status((426,), {"Sec-WebSocket-Version": "14"}, check=needs_version_13)),
        ("no Sec-WebSocket-Version: 400 or 426",
         expect_status(refused, {"Sec-WebSocket-Version": None})),
        ("no Upgrade field: 400 or 426", expect_status(refused, {"Upgrade": None})),
        ("Upgrade: h2c: 400 or 426", expect_status(refused, {"Upgrade": "h2c"})),
        ("no Connection field: 400 or 426", expect_status(refused, {"Connection": None})),
        ("Connection: keep-alive without upgrade: 400 or 426",
         expect_status(refused, {"Connection": "keep-alive"})),
        ("a plain GET without upgrade fields: 400 or 426",
         expect_status(refused, dict(no_upgrade, **{"Sec-WebSocket-Key": None,
                                                    "Sec-WebSocket-Version": None}))),
        ("POST with the upgrade fields: 400 or 405",
         expect_status((400, 405), {"Content-Length": "0"}, method="POST")),
        ("HTTP/1.0 with the upgrade fields: 400 (or 426, 505)",
         expect_status((400, 426, 505), version="HTTP/1.0")),
        ("subprotocols offered to a server that has none: 101 without one",
         echo_on({"Sec-WebSocket-Protocol": "chat, superchat"})),
        ("an unknown extension offered: 101 without it",
         echo_on({"Sec-WebSocket-Extensions": "x-unknown-extension; level=3"})),
    ]
    return [Case("0.%d" % i, desc, None, run=run) for i, (desc, run) in enumerate(rows, 1)]


# ---- 12 permessage-deflate negotiation ----------------------------------------------------------

def negotiation_cases():
    cases = []
    declined = [
        ("an unknown parameter", "permessage-deflate; foo=1"),
        ("server_max_window_bits=7", "permessage-deflate; server_max_window_bits=7"),
        ("server_max_window_bits=16", "permessage-deflate; server_max_window_bits=16"),
        ("server_max_window_bits=010", "permessage-deflate; server_max_window_bits=010"),
        ("server_max_window_bits without a value", "permessage-deflate; server_max_window_bits"),
        ("client_max_window_bits=7", "permessage-deflate; client_max_window_bits=7"),
        ("server_no_context_takeover twice",
         "permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
        ("server_no_context_takeover=1", "permessage-deflate; server_no_context_takeover=1"),
    ]
    for i, (desc, offers) in enumerate(declined, 1):
        cases.append(Case("12.7.%d" % i, "an offer with %s: declined (101 without the extension),"
                          " then RSV1 is 1002" % desc,
                          lambda: [Send(TEXT, b"x", rsv=RSV1), ExpectClose(1002)],
                          offers=offers, deflate=False))
    accepted = [
        ("an invalid offer, then a valid one: the second accepted",
         "permessage-deflate; foo, permessage-deflate; client_max_window_bits"),
        ("an unknown extension, then permessage-deflate: only permessage-deflate",
         "x-unknown-extension, permessage-deflate"),
        ("server_max_window_bits as a quoted string",
         'permessage-deflate; server_max_window_bits="10"'),
        ("the offer in two fields", ["x-unknown-extension", "permessage-deflate"]),
    ]
    n = len(declined)
    for desc, offers in accepted:
        n += 1
        cases.append(Case("12.7.%d" % n, desc, messages_of("compressible text", 4096, 2),
                          offers=offers))
    return cases


def plain_server_cases():
    """Category 12 for a server without permessage-deflate."""
    return [Case("12.0.1", "permessage-deflate offered to a server without it: declined, then "
                 "RSV1 is 1002", lambda: [Send(TEXT, b"x", rsv=RSV1), ExpectClose(1002)],
                 offers="permessage-deflate; client_max_window_bits", deflate=False)]


# ---- 13 permessage-deflate parameters ------------------------------------------------------

def deflate_parameter_cases():
    cases = []
    sub = 0
    for cnct in (False, True):
        for snct in (False, True):
            sub += 1
            n = 0
            for cmwb in [None, "bare"] + list(range(9, 16)):
                for smwb in [None] + list(range(9, 16)):
                    n += 1
                    offer = offer_string(cnct, snct, cmwb, smwb)
                    cases.append(Case("13.%d.%d" % (sub, n), "offer '%s'" % offer,
                                      parameter_steps, offers=offer))
    several = [
        "permessage-deflate; server_max_window_bits=9; client_no_context_takeover, "
        "permessage-deflate",
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=10, "
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=12; server_no_context_takeover, "
        "permessage-deflate; server_max_window_bits=15, permessage-deflate",
    ]
    for i, offer in enumerate(several, 1):
        cases.append(Case("13.5.%d" % i, "several offers '%s'" % offer, parameter_steps,
                          offers=offer))
    return cases


# ---- Running -----------------------------------------------------------------------------------

def all_cases(args):
    cases = handshake_cases() + common_cases(args.max_message)
    if args.deflate:
        messages = deflate_message_cases(args.max_message)
        for case in messages:
            case.opts["offers"] = "permessage-deflate; client_max_window_bits"
        cases += messages + negotiation_cases() + deflate_parameter_cases()
    else:
        cases += plain_server_cases()
    return cases


def run_case(case, target, ctx):
    """Runs one case; returns a note for its PASS line, or raises CaseFail."""
    if "run" in case.opts:
        case.opts["run"](target, ctx)
        return ""
    s = open_session(target, ctx, offers=case.opts.get("offers"),
                     deflate=case.opts.get("deflate", True))
    try:
        run_steps(s, case.build())
    finally:
        s.sock.close()
    return "lenient: TCP closed without a close frame" if s.lenient_close else ""


def main():
    parser = argparse.ArgumentParser(description="WebSocket conformance table for a server")
    parser.add_argument("--url", help="the echo server, ws://HOST:PORT/PATH")
    parser.add_argument("--deflate", action="store_true",
                        help="the server was started with permessage-deflate")
    add_common_arguments(parser)
    args = parser.parse_args()
    cases = selected(all_cases(args), split_list(args.category), split_list(args.case))
    if args.list:
        list_cases(cases)
        return 0
    if not args.url:
        parser.error("--url is required")
    try:
        target = Target(args.url)
    except ValueError as exc:
        parser.error(str(exc))
    ctx = Context(args.timeout, args.lenient)
    report = Report()
    for case in cases:
        try:
            note = run_case(case, target, ctx)
            report.result(case, "PASS", note)
        except CaseFail as exc:
            report.result(case, "FAIL", str(exc))
    return 0 if report.summary() else 1


if __name__ == "__main__":
    sys.exit(main())
