#!/usr/bin/python3
# WebSocket conformance table for a CLIENT (RFC 6455, RFC 7692): the
# mirror of tests/ws_conformance.py. A raw-socket server (socket, struct,
# os.urandom and zlib; no WebSocket library) runs the client under test
# once per case as
#     PROGRAM ws://127.0.0.1:PORT/CASE-ID
# The program connects, echoes every message it receives with its opcode
# until the connection closes, then prints exactly one line and exits 0:
#     close CODE   the close code it received, or the one it sent when it
#                  failed the connection (1002, 1007, 1009...); 1005 for
#                  a close without a code
#     error NAME   a failed handshake or a connection lost without a close
#                  (e.g. error EPROTO)
#
#  0  opening handshake: the request (GET, HTTP/1.1, Host, Upgrade,
#     Connection, a fresh 16-byte Sec-WebSocket-Key, version 13); the
#     responses a client must refuse (status 200, 400, 426, a wrong or
#     missing Sec-WebSocket-Accept, no Upgrade or Connection, an extension
#     or a subprotocol not offered, a connection closed early): `error
#     NAME`, and not one byte of a frame sent
#  1-10  the shared tables (tests/ws_conformance_tables.py), frames from
#     this side unmasked; every frame from the client must be masked, with
#     a key other than its previous frame's; a masked frame from the
#     server is a protocol error (1.4)
# 12  permessage-deflate (with --deflate: the client offers it): its
#     offer, the messages of the server table (compressed by this side),
#     and the responses a client must refuse under RFC 7692 §5 and §7.1
#     (unknown, repeated or invalid parameters, client_max_window_bits not
#     offered, two permessage-deflate elements): `error NAME`
# 13  permessage-deflate parameters: responses with every combination of
#     client_no_context_takeover, server_no_context_takeover,
#     client_max_window_bits (absent, 9, 12, 15, when offered) and
#     server_max_window_bits (absent, 9, 12, 15); the client's echoes must
#     inflate with what the response agreed
#
# Expectations are strict as in the server table: a protocol error is a
# close frame with its code, which the program then prints; --lenient
# also accepts a connection closed without one (and any line then).
# Output and exit status as in tests/ws_conformance.py; a program that does
# not connect, print its line or exit within the timeouts is a FAIL.
#
# usage: tests/ws_conformance_client.py [options] PROGRAM [ARG...]
#   --deflate          the program offers permessage-deflate
#   --max-message N    the program's message limit (default 1 MiB)
#   --category C, --case ID, --list, --timeout S, --lenient
#                      as in tests/ws_conformance.py
#   --start-timeout S  seconds for the program to connect (default 10)
"""tests/ws_conformance_client.py: WebSocket conformance table for a client
(see the header comment)."""

import argparse
import base64
import binascii
import os
import re
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ws_conformance_lib import CaseFail, Context, Session, clip, head_bytes, read_head  # noqa: E402
from ws_conformance_steps import (Case, Expect, Report, SendMessage,  # noqa: E402
                                  add_common_arguments, list_cases, run_steps, selected,
                                  split_list)
from ws_conformance_tables import (common_cases, deflate_message_cases, messages_of,  # noqa: E402
                                   parameter_steps)
from ws_wire import (Pmd, PmdParams, TEXT, accept_for, encode_frame,  # noqa: E402
                     parse_extensions, window_bits)

ERROR_LINE = re.compile(r"error [A-Z][A-Z0-9_]*")
ANY_LINE = re.compile(r"(close \d+|error [A-Z][A-Z0-9_]*)")
PMD = "permessage-deflate"


class Skip(Exception):
    pass


class Run:
    """What the cases of one run share: the listener, the program, the
    keys seen (each connection must bring a new one)."""

    def __init__(self, program, ctx, deflate, start_timeout):
        self.program, self.ctx, self.deflate = program, ctx, deflate
        self.start_timeout = start_timeout
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.keys = set()


def response_head(req, status="101 Switching Protocols", fields=None):
    key = req.value("Sec-WebSocket-Key") or ""
    base = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_for(key))]
    return head_bytes("HTTP/1.1 " + status, base, fields)


def offers_of(req):
    """The client's permessage-deflate offers: [{param: value}]."""
    try:
        exts = parse_extensions(req.values("Sec-WebSocket-Extensions"))
    except ValueError as exc:
        raise CaseFail("a valid Sec-WebSocket-Extensions", str(exc)) from None
    return [dict(params) for name, params in exts if name == PMD]


# ---- 0 the opening handshake ---------------------------------------------------------------

def check_request(req, run, case):
    """RFC 6455 §4.1."""
    expected = "a request as RFC 6455 §4.1 says"
    parts = req.start.split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
        raise CaseFail(expected, repr(req.start))
    if parts[1] != "/" + case.id:
        raise CaseFail("the path /%s" % case.id, parts[1])
    if req.values("Host") != ["127.0.0.1:%d" % run.port]:
        raise CaseFail("Host: 127.0.0.1:%d" % run.port, "Host: %s" % req.value("Host"))
    if req.tokens("Upgrade") != ["websocket"]:
        raise CaseFail("Upgrade: websocket", "Upgrade: %s" % req.value("Upgrade"))
    if "upgrade" not in req.tokens("Connection"):
        raise CaseFail("Connection: Upgrade", "Connection: %s" % req.value("Connection"))
    if req.values("Sec-WebSocket-Version") != ["13"]:
        raise CaseFail("Sec-WebSocket-Version: 13",
                       "Sec-WebSocket-Version: %s" % req.value("Sec-WebSocket-Version"))
    keys = req.values("Sec-WebSocket-Key")
    try:
        nbytes = len(base64.b64decode(keys[0], validate=True)) if len(keys) == 1 else -1
    except (binascii.Error, ValueError):
        nbytes = -1
    if nbytes != 16:
        raise CaseFail("one Sec-WebSocket-Key of 16 bytes in base64",
                       "Sec-WebSocket-Key: %s" % req.value("Sec-WebSocket-Key"))


def upgrade_then(steps, fields=None, first=b""):
    """A case body: answer 101 (with fields), write first after it in the
    same write, run steps."""
    def body(sock, req, run):
        sock.sendall(response_head(req, fields=fields) + first)
        return session_line(Session(sock, False, run.ctx, req.rest), steps)
    return body


def session_line(s, steps):
    run_steps(s, steps)
    return ANY_LINE if s.lenient_close else "close %d" % s.final_code


def the_request(sock, req, run):
    check_request(req, run, run.case)
    return upgrade_then([SendMessage(TEXT, b"Hello"), Expect(TEXT, b"Hello")])(
        sock, req, run)


def refused(head=None, close_early=False):
    """A case body: answer with head(req) (and a text frame after it), or
    close at once; the client must close without sending a byte."""
    def body(sock, req, run):
        if not close_early:
            data = head(req) if callable(head) else head
            sock.sendall(data + encode_frame(TEXT, b"not to be echoed"))
        else:
            sock.shutdown(socket.SHUT_WR)
        got, deadline = b"", time.monotonic() + run.ctx.timeout
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            got += data
        else:
            raise CaseFail("the client to close the connection",
                           "it open after %.1f s" % run.ctx.timeout)
        if got:
            raise CaseFail("nothing from the client", "%d bytes: %s" % (len(got), clip(got)))
        return ERROR_LINE
    return body


def handshake_cases():
    ok = upgrade_then
    hello = lambda: [SendMessage(TEXT, b"Hello"), Expect(TEXT, b"Hello")]
    rows = [
        ("the request: GET, HTTP/1.1, Host, Upgrade, Connection, a 16-byte key, version 13",
         the_request),
        ("Upgrade: WebSocket, Connection: keep-alive, Upgrade: accepted",
         ok(hello(), {"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"})),
        ("the first frame in the 101's write: echoed",
         ok([Expect(TEXT, b"first")], first=encode_frame(TEXT, b"first"))),
        ("status 200: error", refused(lambda r: response_head(r, "200 OK",
                                                               {"Content-Length": "0"}))),
        ("status 400: error", refused(lambda r: response_head(r, "400 Bad Request",
                                                               {"Content-Length": "0"}))),
        ("status 426 with Sec-WebSocket-Version: 13: error",
         refused(lambda r: response_head(r, "426 Upgrade Required",
                                         {"Sec-WebSocket-Version": "13",
                                          "Content-Length": "0"}))),
        ("a wrong Sec-WebSocket-Accept: error",
         refused(lambda r: response_head(r, fields={"Sec-WebSocket-Accept": accept_for(
             base64.b64encode(os.urandom(16)).decode())}))),
        ("no Sec-WebSocket-Accept: error",
         refused(lambda r: response_head(r, fields={"Sec-WebSocket-Accept": None}))),
        ("no Upgrade: error", refused(lambda r: response_head(r, fields={"Upgrade": None}))),
        ("Upgrade: h2c: error", refused(lambda r: response_head(r, fields={"Upgrade": "h2c"}))),
        ("no Connection: error",
         refused(lambda r: response_head(r, fields={"Connection": None}))),
        ("Connection: keep-alive: error",
         refused(lambda r: response_head(r, fields={"Connection": "keep-alive"}))),
        ("an extension not offered: error",
         refused(lambda r: response_head(r, fields={
             "Sec-WebSocket-Extensions": "x-unknown-extension"}))),
        ("a subprotocol not offered: error",
         refused(lambda r: response_head(r, fields={"Sec-WebSocket-Protocol": "chat"}))),
        ("the connection closed before a response: error", refused(close_early=True)),
        ("a response head cut short, then the connection closed: error",
         refused_cut()),
    ]
    return [Case("0.%d" % i, desc, None, run=body) for i, (desc, body) in enumerate(rows, 1)]


def refused_cut():
    def body(sock, req, run):
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
        return refused(close_early=True)(sock, req, run)
    return body


# ---- 12 and 13 permessage-deflate -----------------------------------------------------------

def response_ext(offer, cnct=False, snct=False, cmwb=None, smwb=None):
    """Our acceptance of offer with these parameters, or Skip when RFC
    7692 §7.1 would not allow it for this offer."""
    if "server_no_context_takeover" in offer and not snct:
        raise Skip("the offer asks for server_no_context_takeover")
    if "server_max_window_bits" in offer:
        asked = window_bits(offer["server_max_window_bits"])
        if smwb is None or asked is None or smwb > asked:
            raise Skip("the offer asks for server_max_window_bits=%s"
                       % offer["server_max_window_bits"])
    if cmwb is not None and "client_max_window_bits" not in offer:
        raise Skip("the offer has no client_max_window_bits")
    parts = [PMD]
    parts += ["client_no_context_takeover"] if cnct else []
    parts += ["server_no_context_takeover"] if snct else []
    parts += ["client_max_window_bits=%d" % cmwb] if cmwb else []
    parts += ["server_max_window_bits=%d" % smwb] if smwb else []
    return "; ".join(parts), PmdParams(snct, cnct, smwb or 15, cmwb or 15)


def deflated(steps_of, **params):
    """A case body: accept the client's first offer with params, run the
    steps with the agreed parameters."""
    def body(sock, req, run):
        offers = offers_of(req)
        if not offers:
            raise CaseFail("a permessage-deflate offer", "Sec-WebSocket-Extensions: %s"
                           % req.value("Sec-WebSocket-Extensions"))
        ext, agreed = response_ext(offers[0], **params)
        sock.sendall(response_head(req, fields={"Sec-WebSocket-Extensions": ext}))
        s = Session(sock, False, run.ctx, req.rest, Pmd(agreed, client=False))
        return session_line(s, steps_of())
    return body


def refused_ext(value, needs=None, unless=None):
    """A case body: answer with this Sec-WebSocket-Extensions value, which
    the client must refuse; needs/unless: an offer parameter that must be
    (or must not be) there for the value to be wrong."""
    def body(sock, req, run):
        offers = offers_of(req)
        if not offers:
            raise CaseFail("a permessage-deflate offer", "none")
        if needs and needs not in offers[0]:
            raise Skip("the offer has no %s" % needs)
        if unless and unless in offers[0]:
            raise Skip("the offer has %s" % unless)
        val = value(offers[0]) if callable(value) else value
        return refused(lambda r: response_head(r, fields={"Sec-WebSocket-Extensions": val}))(
            sock, req, run)
    return body


def check_offer(sock, req, run):
    """RFC 7692 §7.1: known parameters, once each, valid values."""
    offers = offers_of(req)
    if not offers:
        raise CaseFail("a permessage-deflate offer", "Sec-WebSocket-Extensions: %s"
                       % req.value("Sec-WebSocket-Extensions"))
    exts = parse_extensions(req.values("Sec-WebSocket-Extensions"))
    for name, params in exts:
        if name != PMD:
            continue
        names = [n for n, _ in params]
        if len(set(names)) != len(names):
            raise CaseFail("each parameter once", str(params))
        for n, v in params:
            if n in ("server_no_context_takeover", "client_no_context_takeover") and v is None:
                continue
            if n == "server_max_window_bits" and window_bits(v):
                continue
            if n == "client_max_window_bits" and (v is None or window_bits(v)):
                continue
            raise CaseFail("parameters of RFC 7692 §7.1", "%s=%s" % (n, v))
    return deflated(messages_of("compressible text", 1024, 2))(sock, req, run)


def deflate_cases(max_message):
    cases = [Case("12.0.1", "the offer follows RFC 7692 §7.1, and is accepted", None,
                  run=check_offer)]
    for case in deflate_message_cases(max_message):
        case.opts["run"] = deflated(case.build)
        cases.append(case)
    bad = [
        ("an unknown parameter", "permessage-deflate; foo=1", None, None),
        ("server_max_window_bits=7", "permessage-deflate; server_max_window_bits=7", None, None),
        ("server_max_window_bits=16", "permessage-deflate; server_max_window_bits=16", None,
         None),
        ("server_max_window_bits without a value", "permessage-deflate; server_max_window_bits",
         None, None),
        ("server_no_context_takeover twice",
         "permessage-deflate; server_no_context_takeover; server_no_context_takeover", None,
         None),
        ("server_no_context_takeover=1", "permessage-deflate; server_no_context_takeover=1",
         None, None),
        ("client_max_window_bits not offered", "permessage-deflate; client_max_window_bits=10",
         None, "client_max_window_bits"),
        ("client_max_window_bits without a value", "permessage-deflate; client_max_window_bits",
         None, None),
        ("client_max_window_bits=16", "permessage-deflate; client_max_window_bits=16",
         "client_max_window_bits", None),
        ("two permessage-deflate elements", "permessage-deflate, permessage-deflate", None,
         None),
        ("server_max_window_bits above the offer's",
         lambda offer: "permessage-deflate; server_max_window_bits=%d" % min(
             15, (window_bits(offer.get("server_max_window_bits")) or 15) + 1),
         "server_max_window_bits", None),
    ]
    for i, (desc, value, needs, unless) in enumerate(bad, 1):
        cases.append(Case("12.7.%d" % i, "a response with %s: error" % desc, None,
                          run=refused_ext(value, needs, unless)))
    good = [
        ("server_max_window_bits=10 though not offered", dict(smwb=10)),
        ("client_no_context_takeover though not offered", dict(cnct=True)),
        ("server_no_context_takeover though not offered", dict(snct=True)),
    ]
    n = len(bad)
    for desc, params in good:
        n += 1
        cases.append(Case("12.7.%d" % n, "a response with %s: accepted" % desc, None,
                          run=deflated(messages_of("compressible text", 4096, 2), **params)))
    n += 1
    cases.append(Case("12.7.%d" % n, "a response with server_max_window_bits=\"10\" (quoted): "
                      "accepted", None, run=quoted_bits))
    return cases


def quoted_bits(sock, req, run):
    offers = offers_of(req)
    if not offers:
        raise CaseFail("a permessage-deflate offer", "none")
    # An offer of server_no_context_takeover is accepted only by answering it.
    snct = "server_no_context_takeover" in offers[0]
    ext = "permessage-deflate; " + ("server_no_context_takeover; " if snct else "")
    sock.sendall(response_head(req, fields={
        "Sec-WebSocket-Extensions": ext + 'server_max_window_bits="10"'}))
    s = Session(sock, False, run.ctx, req.rest, Pmd(PmdParams(snct=snct, smwb=10), client=False))
    return session_line(s, messages_of("compressible text", 4096, 2)())


def plain_client_cases():
    """Category 12 for a client that does not offer permessage-deflate."""
    def body(sock, req, run):
        if offers_of(req):
            raise Skip("the client offers permessage-deflate: run with --deflate")
        return refused(lambda r: response_head(r, fields={"Sec-WebSocket-Extensions": PMD}))(
            sock, req, run)
    return [Case("12.0.1", "permessage-deflate in the response of a client that offered none: "
                 "error", None, run=body)]


def parameter_cases():
    cases = []
    sub = 0
    for cnct in (False, True):
        for snct in (False, True):
            sub += 1
            n = 0
            for cmwb in (None, 9, 12, 15):
                for smwb in (None, 9, 12, 15):
                    n += 1
                    desc = "; ".join(["permessage-deflate"]
                                     + ["client_no_context_takeover"] * cnct
                                     + ["server_no_context_takeover"] * snct
                                     + (["client_max_window_bits=%d" % cmwb] if cmwb else [])
                                     + (["server_max_window_bits=%d" % smwb] if smwb else []))
                    cases.append(Case("13.%d.%d" % (sub, n), "response '%s'" % desc, None,
                                      run=deflated(parameter_steps, cnct=cnct, snct=snct,
                                                   cmwb=cmwb, smwb=smwb)))
    return cases


# ---- Running -----------------------------------------------------------------------------------

def all_cases(args):
    cases = handshake_cases()
    for case in common_cases(args.max_message):
        case.opts["run"] = lambda sock, req, run, build=case.build: upgrade_then(build())(
            sock, req, run)
        cases.append(case)
    if args.deflate:
        cases += deflate_cases(args.max_message) + parameter_cases()
    else:
        cases += plain_client_cases()
    return cases


def accept(run):
    run.listener.settimeout(run.start_timeout)
    try:
        sock, _ = run.listener.accept()
    except socket.timeout:
        raise CaseFail("a connection from the client",
                       "none within %.1f s" % run.start_timeout) from None
    return sock


def drain(run):
    """Closes connections the program made beyond the case's one (a
    retry), so that the next case gets its own."""
    run.listener.settimeout(0)
    while True:
        try:
            extra, _ = run.listener.accept()
        except OSError:
            return
        extra.close()


def drive(case, run):
    """The server's side of a case: the expected line (a string or a
    pattern), or CaseFail / Skip."""
    sock = accept(run)
    try:
        req = read_head(sock, run.ctx.timeout, "the client's request")
        key = req.value("Sec-WebSocket-Key")
        if key in run.keys:
            raise CaseFail("a new Sec-WebSocket-Key", "%s again" % key)
        run.keys.add(key)
        run.case = case
        return case.opts["run"](sock, req, run)
    finally:
        sock.close()


def run_case(case, run):
    """Returns a note for the PASS line, or raises CaseFail or Skip."""
    url = "ws://127.0.0.1:%d/%s" % (run.port, case.id)
    proc = subprocess.Popen(run.program + [url], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    failure, expected = None, None
    try:
        expected = drive(case, run)
    except (CaseFail, Skip) as exc:
        failure = exc
    try:
        out, err = proc.communicate(timeout=run.ctx.timeout + 3)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        if failure is None:
            failure = CaseFail("the program to exit", "it still running %.1f s after the "
                               "connection ended" % (run.ctx.timeout + 3))
    drain(run)
    if failure is not None:
        raise failure
    lines = out.decode(errors="replace").splitlines()
    said = "; stderr: %s" % clip(err, 200) if err.strip() else ""
    if proc.returncode != 0:
        raise CaseFail("exit status 0", "%d%s" % (proc.returncode, said))
    if len(lines) != 1:
        raise CaseFail("one line on stdout", "%r%s" % (out[:200], said))
    line = lines[0].strip()
    if isinstance(expected, str):
        if line != expected:
            raise CaseFail("'%s'" % expected, "'%s'" % line)
        return ""
    if not expected.fullmatch(line):
        raise CaseFail("a line '%s'" % expected.pattern, "'%s'" % line)
    return "lenient: %s" % line if expected is ANY_LINE else line


def main():
    parser = argparse.ArgumentParser(description="WebSocket conformance table for a client")
    parser.add_argument("--deflate", action="store_true",
                        help="the program offers permessage-deflate")
    parser.add_argument("--start-timeout", type=float, default=10.0,
                        help="seconds for the program to connect (default 10)")
    add_common_arguments(parser)
    parser.add_argument("program", nargs=argparse.REMAINDER,
                        help="the client under test and its arguments")
    args = parser.parse_args()
    cases = selected(all_cases(args), split_list(args.category), split_list(args.case))
    if args.list:
        list_cases(cases)
        return 0
    if not args.program:
        parser.error("the program to test is required")
    ctx = Context(args.timeout, args.lenient)
    run = Run(args.program, ctx, args.deflate, args.start_timeout)
    report = Report()
    for case in cases:
        try:
            note = run_case(case, run)
            report.result(case, "PASS", note)
        except CaseFail as exc:
            report.result(case, "FAIL", str(exc))
        except Skip as exc:
            report.result(case, "SKIP", str(exc))
    return 0 if report.summary() else 1


if __name__ == "__main__":
    sys.exit(main())
