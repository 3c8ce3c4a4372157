#!/usr/bin/python3
# Hostile-input conformance table for an HTTP/1.1 server: one case per rule
# of RFC 9110/9112 (and per known parser CVE) that a server facing the open
# network must hold. Each case opens a fresh TCP connection, sends raw bytes
# (in several writes with pauses where the rule is about splitting), reads
# the response(s) with its own strict HTTP/1.1 response parser and checks:
#   - the status code (or one of a small set of accepted ones);
#   - what follows the response: "close" cases (rejections, and HTTP/1.0 or
#     Connection: close requests) need the server to close the connection
#     within the timeout with no second response (never two responses for
#     one ambiguous message), and a rejection (4xx/5xx) must carry
#     "Connection: close"; "keep" cases (valid requests) need the connection
#     to stay usable: a follow-up "GET / HTTP/1.1" must get a 200; "auto"
#     cases decide from the status (2xx, 404, 405: either, but no stray
#     bytes, and if it stays open a follow-up gets a 200; other: close);
#   - for some cases the body (POST /echo answers with the request body), a
#     header (HEAD / carries Content-Length), or that the server answered
#     before it was sent the whole request (CVE-2024-22019).
# The table is written for the http-hello example's routes: GET / -> 200
# "Hello, World!", POST /echo -> 200 with the request body, anything else
# 404 (405 for a known path with another method). Limits assumed are the
# keel defaults: 8 KiB URL, 16 KiB request line plus headers, 100 header
# fields, 1 MiB body.
# Prints one line per case (PASS/FAIL/n-a, the expectation, what was seen;
# under a FAIL the bytes sent and received), then a summary line. Exits 0
# only if every case run passed (n/a cases are not failures), 1 otherwise,
# 2 on a usage error.
#
# usage: tests/http_hostile.py --port P [options]
#   --host H         server address (default 127.0.0.1)
#   --port P         server port (required unless --list)
#   --only NAME      run only this case; repeatable, comma-separated, shell
#                    wildcards allowed (e.g. --only 'cl-*,te-*')
#   --list           list the cases (name, expectation, reference) and exit
#   --json           print the results as one JSON document instead of lines
#   --timeout S      seconds to wait for each response and for a close
#                    (default 5)
#   --jobs N         cases run at once (default 1: timing-sensitive cases
#                    measure best alone)
#   --n-a FEATURE    report the cases needing FEATURE as n/a instead of
#                    running them; repeatable. Features: echo (POST /echo
#                    answers with the request body)
#   -h, --help       this text
"""tests/http_hostile.py: hostile-input table for an HTTP/1.1 server (see the
header comment)."""

import argparse
import concurrent.futures
import errno
import fnmatch
import json
import re
import select
import socket
import sys
import time

FOLLOW_UP = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
SETTLE = 0.1          # seconds to wait for stray bytes before a follow-up
MAX_HEAD = 65536      # bytes of response header section accepted
SHOW_SENT = 300       # bytes of the request shown under a FAIL
SHOW_RECEIVED = 400   # bytes of the response shown under a FAIL

CLOSE, KEEP, AUTO = "close", "keep", "auto"


# --------------------------------------------------------------------------
# The table's vocabulary

class Send:
    """Bytes to write: `pieces` in order, `pause` seconds between them.
    With `until_answer`, writing stops as soon as the server sends anything
    (the large requests: no point pushing 10 MiB at a server that said
    413). With `answer_early`, the case fails unless the server answered
    (or closed) before it was written every byte of this step."""

    def __init__(self, data=None, pieces=None, pause=0.0, until_answer=False,
                 answer_early=False, piece_size=None):
        if pieces is None:
            if piece_size:
                pieces = [data[i:i + piece_size] for i in range(0, len(data), piece_size)]
            else:
                pieces = [data]
        self.pieces = pieces
        self.pause = pause
        self.until_answer = until_answer
        self.answer_early = answer_early

    @property
    def size(self):
        return sum(len(p) for p in self.pieces)


class Expect:
    """One response: its status in `statuses`; `head` when it answers a HEAD
    (no body); `body` the exact body wanted (None: any); `header` a field
    name that must be present. Interim (1xx) responses are skipped unless
    the expected statuses are 1xx."""

    def __init__(self, *statuses, head=False, body=None, header=None):
        self.statuses = frozenset(statuses)
        self.head = head
        self.body = body
        self.header = header

    def text(self):
        return "/".join(str(s) for s in sorted(self.statuses))


class Case:
    def __init__(self, name, ref, steps, after, needs=(), note=""):
        self.name = name
        self.ref = ref
        self.steps = steps
        self.after = after
        self.needs = tuple(needs)
        self.note = note

    def expected(self):
        return ",".join(s.text() for s in self.steps if isinstance(s, Expect)) + " " + self.after

    def sent_bytes(self):
        return b"".join(b"".join(s.pieces) for s in self.steps if isinstance(s, Send))


def case(name, ref, data, *statuses, after=None, body=None, head=False, header=None,
         needs=(), note="", **send_kw):
    """The common shape: one Send, one Expect. `after` defaults to close for
    a rejection and keep otherwise."""
    if after is None:
        after = CLOSE if min(statuses) >= 400 else KEEP
    if isinstance(data, list):
        send = Send(pieces=data, **send_kw)
    else:
        send = Send(data, **send_kw)
    return Case(name, ref, [send, Expect(*statuses, head=head, body=body, header=header)],
                after, needs=needs, note=note)


def get(headers=b"Host: x\r\n", target=b"/", version=b"HTTP/1.1", method=b"GET"):
    return method + b" " + target + b" " + version + b"\r\n" + headers + b"\r\n"


def post(headers, body, target=b"/echo", version=b"HTTP/1.1"):
    return b"POST " + target + b" " + version + b"\r\nHost: x\r\n" + headers + b"\r\n" + body


def chunked(body, headers=b""):
    return post(headers + b"Transfer-Encoding: chunked\r\n", body)


HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
UNKNOWN_METHOD = (400, 404, 405, 501)
R9110, R9112 = "RFC 9110", "RFC 9112"


def build_table():
    t = []
    add = t.append

    # -- RFC 9112 §2.2: line endings, bare CR, whitespace after the start line
    add(case("bare-cr-request-line", R9112 + " §2.2", b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400))
    add(case("bare-cr-in-target", R9112 + " §2.2, §3.2", b"GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n", 400))
    add(case("bare-cr-header-value", R9112 + " §2.2; " + R9110 + " §5.5",
             get(b"Host: x\r\nFoo: a\rb\r\n"), 400))
    add(case("cr-ends-header-line", "CVE-2023-30589; " + R9112 + " §2.2",
             b"GET / HTTP/1.1\r\nHost: x\rFoo: y\r\n\r\n", 400))
    add(case("cr-ends-header-line-split", "CVE-2023-30589 (CR at a read boundary)",
             [b"GET / HTTP/1.1\r\nHost: x\r", b"Foo: y\r\n\r\n"], 400, pause=0.2))
    add(case("bare-lf-request-line", R9112 + " §2.2 (MAY accept LF; strict)",
             b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400))
    add(case("bare-lf-header-line", R9112 + " §2.2 (MAY accept LF; strict)",
             b"GET / HTTP/1.1\r\nHost: x\nFoo: y\r\n\r\n", 400))
    add(case("bare-lf-end-of-headers", R9112 + " §2.2 (MAY accept LF; strict)",
             b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400))
    add(case("bare-lf-only", R9112 + " §2.2 (MAY accept LF; strict)",
             b"GET / HTTP/1.1\nHost: x\n\n", 400))
    add(case("ws-before-first-header", "CVE-2024-27982; " + R9112 + " §2.2",
             b"POST /echo HTTP/1.1\r\n Content-Length: 5\r\nHost: x\r\n\r\nhello", 400))
    add(case("nul-in-header-value", R9110 + " §5.5", get(b"Host: x\r\nFoo: a\x00b\r\n"), 400))
    add(case("ctl-in-header-value", R9110 + " §5.5 (strict)", get(b"Host: x\r\nFoo: a\x01b\r\n"), 400))
    add(case("del-in-header-value", R9110 + " §5.5 (strict)", get(b"Host: x\r\nFoo: a\x7fb\r\n"), 400))
    add(case("obs-text-in-header-value", R9110 + " §5.5 (obs-text allowed)",
             get(b"Host: x\r\nFoo: caf\xc3\xa9 \x80\xff\r\n"), 200))
    add(case("htab-in-header-value", R9110 + " §5.5", get(b"Host: x\r\nFoo: a\tb\r\n"), 200))

    # -- RFC 9112 §3: the request line
    add(case("bad-method-token", R9110 + " §9.1; " + R9112 + " §3",
             get(method=b"G@T"), 400))
    add(case("lowercase-method", R9110 + " §9.1 (methods are case-sensitive)",
             get(method=b"get"), *UNKNOWN_METHOD, after=AUTO))
    add(case("unknown-method", R9110 + " §9.1", get(method=b"FOO"), *UNKNOWN_METHOD, after=AUTO))
    add(case("http-0.9-request", R9112 + " §3 (no HTTP/0.9)", b"GET /\r\n\r\n", 400))
    # A later minor version: RFC 9110 §2.5 says to process it as the highest
    # 1.x known (200); 505 is tolerated, 400 is not (the request is valid).
    add(case("version-1.2", R9110 + " §2.5 (as 1.1), §15.6.6", get(version=b"HTTP/1.2"), 200, 505,
             after=AUTO))
    add(case("version-2.0", R9110 + " §15.6.6", get(version=b"HTTP/2.0"), 505))
    add(case("version-3.0", R9110 + " §15.6.6", get(version=b"HTTP/3.0"), 505))
    add(case("version-0.9", R9110 + " §15.6.6", get(version=b"HTTP/0.9"), 400, 505))
    add(case("version-lowercase", R9112 + " §2.3 (HTTP-name is case-sensitive)",
             get(version=b"http/1.1"), 400))
    add(case("double-space-request-line", R9112 + " §3", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400))
    add(case("trailing-space-request-line", R9112 + " §3", b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400))
    add(case("tab-separated-request-line", R9112 + " §3 (MAY split on whitespace; strict)",
             b"GET\t/\tHTTP/1.1\r\nHost: x\r\n\r\n", 400))
    add(case("url-10k", R9112 + " §3; " + R9110 + " §15.5.15 (limit 8 KiB)",
             get(target=b"/" + b"a" * 10240), 414))
    add(case("absolute-form", R9112 + " §3.2.2", get(target=b"http://x/"), 200))
    add(case("asterisk-form-get", R9112 + " §3.2.4 (OPTIONS only)", get(target=b"*"), 400))
    add(case("authority-form-get", R9112 + " §3.2.3 (CONNECT only)", get(target=b"x:80"), 400))
    add(case("connect", R9110 + " §9.3.6", get(b"Host: x:443\r\n", target=b"x:443", method=b"CONNECT"),
             400, 405, 501, after=CLOSE))

    # -- Host: RFC 9112 §3.2, RFC 9110 §7.2
    add(case("no-host", R9112 + " §3.2", get(b""), 400))
    add(case("two-host", R9112 + " §3.2", get(b"Host: x\r\nHost: y\r\n"), 400))
    add(case("host-space", R9112 + " §3.2; " + R9110 + " §7.2", get(b"Host: a b\r\n"), 400))
    add(case("host-userinfo", R9112 + " §3.2; " + R9110 + " §7.2", get(b"Host: u@x\r\n"), 400))
    add(case("host-slash", R9112 + " §3.2; " + R9110 + " §7.2", get(b"Host: x/y\r\n"), 400))
    add(case("host-bad-port", R9112 + " §3.2; " + R9110 + " §7.2", get(b"Host: x:8o\r\n"), 400))
    add(case("host-with-port", R9110 + " §7.2", get(b"Host: x:8080\r\n"), 200))
    add(case("host-empty", R9112 + " §3.2 (empty Host is valid)", get(b"Host:\r\n"), 200))
    add(case("http10-no-host", R9112 + " §3.2 (Host is HTTP/1.1's)",
             get(b"", version=b"HTTP/1.0"), 200, after=CLOSE))

    # -- field lines: RFC 9112 §5.1, §5.2
    add(case("space-before-colon", R9112 + " §5.1", get(b"Host: x\r\nFoo : bar\r\n"), 400))
    add(case("empty-field-name", R9112 + " §5.1", get(b"Host: x\r\n: bar\r\n"), 400))
    add(case("field-name-space", R9110 + " §5.1 (token)", get(b"Host: x\r\nFo o: bar\r\n"), 400))
    add(case("field-name-del", R9110 + " §5.1 (token)", get(b"Host: x\r\nFoo\x7f: bar\r\n"), 400))
    add(case("field-no-colon", R9112 + " §5", get(b"Host: x\r\nFoo\r\n"), 400))
    add(case("obs-fold-sp", R9112 + " §5.2", get(b"Host: x\r\nFoo: a\r\n b\r\n"), 400))
    add(case("obs-fold-htab", R9112 + " §5.2", get(b"Host: x\r\nFoo: a\r\n\tb\r\n"), 400))

    # -- limits: RFC 6585 §5 (431), RFC 9110 §15.5.14 (413)
    add(case("header-block-64k", "RFC 6585 §5 (limit 16 KiB)",
             get(b"Host: x\r\n" + b"".join(b"X-%03d: %s\r\n" % (i, b"v" * 1016) for i in range(64))),
             431, until_answer=True, piece_size=8192))
    add(case("header-line-64k", "RFC 6585 §5 (limit 16 KiB)",
             get(b"Host: x\r\nX-Big: " + b"v" * 65536 + b"\r\n"), 431, until_answer=True, piece_size=8192))
    add(case("header-count-200", "RFC 6585 §5 (limit 100 fields)",
             get(b"Host: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200))), 431))
    add(Case("body-over-limit-cl", R9110 + " §15.5.14 (limit 1 MiB)",
             [Send(post(b"Content-Length: 10485760\r\n", b"")),
              Send(b"a" * 10485760, piece_size=65536, until_answer=True),
              Expect(413)], CLOSE))
    add(Case("body-over-limit-chunked", R9110 + " §15.5.14 (limit 1 MiB)",
             [Send(chunked(b"")),
              Send(b"".join(b"10000\r\n" + b"a" * 65536 + b"\r\n" for _ in range(32)) + b"0\r\n\r\n",
                   piece_size=65536, until_answer=True),
              Expect(413)], CLOSE))

    # -- framing: RFC 9112 §6.1-6.3 (request smuggling)
    add(case("cl-and-te", R9112 + " §6.1, §6.3, §11.2",
             chunked(HELLO_CHUNKED, b"Content-Length: 5\r\n"), 400))
    add(case("te-and-cl", R9112 + " §6.1, §6.3, §11.2",
             post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", HELLO_CHUNKED), 400))
    add(case("cl-dup-different", R9112 + " §6.3",
             post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), 400))
    add(case("cl-dup-same", R9112 + " §6.3 (MAY accept; strict)",
             post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"), 400))
    add(case("cl-list", R9110 + " §8.6; " + R9112 + " §6.3", post(b"Content-Length: 1,1\r\n", b"a"), 400))
    add(case("cl-plus", R9110 + " §8.6", post(b"Content-Length: +5\r\n", b"hello"), 400))
    add(case("cl-minus", R9110 + " §8.6", post(b"Content-Length: -1\r\n", b"hello"), 400))
    add(case("cl-trailing-junk", R9110 + " §8.6", post(b"Content-Length: 5x\r\n", b"hello"), 400))
    add(case("cl-hex", R9110 + " §8.6", post(b"Content-Length: 0x5\r\n", b"hello"), 400))
    add(case("cl-empty", R9110 + " §8.6", post(b"Content-Length:\r\n", b"hello"), 400))
    add(case("cl-internal-space", R9110 + " §8.6", post(b"Content-Length: 1 0\r\n", b"helloworld"), 400))
    add(case("cl-overflow", R9110 + " §8.6 (overflow)",
             post(b"Content-Length: 99999999999999999999\r\n", b"hello"), 400, 413))
    add(case("cl-ows", R9112 + " §5.1 (OWS around the value)",
             post(b"Content-Length:  5 \r\n", b"hello"), 200, body=b"hello", needs=["echo"]))
    add(case("get-body-is-request", R9112 + " §6.3 (CL.0)",
             get(b"Host: x\r\nContent-Length: %d\r\n" % len(SMUGGLED)) + SMUGGLED, 200))
    add(case("post-body-is-request", R9112 + " §6.3",
             post(b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED), 200,
             body=SMUGGLED, needs=["echo"]))
    add(case("te-gzip", R9112 + " §6.3 (chunked not final)",
             post(b"Transfer-Encoding: gzip\r\n", b"hello"), 400))
    add(case("te-chunked-gzip", R9112 + " §6.3 (chunked not final)",
             post(b"Transfer-Encoding: chunked, gzip\r\n", HELLO_CHUNKED), 400))
    add(case("te-unknown", R9112 + " §6.3 (chunked not final)",
             post(b"Transfer-Encoding: foo\r\n", b"hello"), 400))
    add(case("te-unknown-then-chunked", R9112 + " §6.1 (unknown coding: 501)",
             post(b"Transfer-Encoding: foo, chunked\r\n", HELLO_CHUNKED), 501))
    add(case("te-chunked-twice-lines", R9112 + " §6.1 (chunked at most once)",
             chunked(HELLO_CHUNKED, b"Transfer-Encoding: chunked\r\n"), 400))
    add(case("te-chunked-chunked", R9112 + " §6.1 (chunked at most once)",
             post(b"Transfer-Encoding: chunked, chunked\r\n", HELLO_CHUNKED), 400))
    add(case("te-xchunked", R9112 + " §6.3 (chunked not final)",
             post(b"Transfer-Encoding: xchunked\r\n", HELLO_CHUNKED), 400))
    add(case("te-ows", R9112 + " §5.1 (OWS around the value)",
             post(b"Transfer-Encoding:   chunked  \r\n", HELLO_CHUNKED), 200, body=b"hello", needs=["echo"]))
    add(case("te-uppercase", R9112 + " §7 (codings are case-insensitive)",
             post(b"Transfer-Encoding: CHUNKED\r\n", HELLO_CHUNKED), 200, body=b"hello", needs=["echo"]))
    add(case("te-space-before-colon", R9112 + " §5.1",
             post(b"Transfer-Encoding : chunked\r\n", HELLO_CHUNKED), 400))
    add(case("te-vtab", R9112 + " §6.1; " + R9110 + " §5.5",
             post(b"Transfer-Encoding: \x0bchunked\r\n", HELLO_CHUNKED), 400))
    add(case("te-obs-fold", R9112 + " §5.2",
             post(b"Transfer-Encoding:\r\n chunked\r\n", HELLO_CHUNKED), 400))
    add(case("te-http10", R9112 + " §6.1 (TE in HTTP/1.0)",
             post(b"Transfer-Encoding: chunked\r\n", HELLO_CHUNKED, version=b"HTTP/1.0"), 400))

    # -- chunked coding: RFC 9112 §7.1
    add(case("chunk-size-nonhex", R9112 + " §7.1", chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400))
    add(case("chunk-size-negative", R9112 + " §7.1", chunked(b"-1\r\nhello\r\n0\r\n\r\n"), 400))
    add(case("chunk-size-0x", R9112 + " §7.1", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400))
    add(case("chunk-size-overflow", R9112 + " §7.1 (overflow)",
             chunked(b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400, 413))
    add(case("chunk-size-leading-space", R9112 + " §7.1", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400))
    add(case("chunk-size-empty", R9112 + " §7.1", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400))
    add(case("chunk-size-bare-lf", "CVE-2025-22871; " + R9112 + " §7.1",
             chunked(b"5\nhello\r\n0\r\n\r\n"), 400))
    add(case("chunk-data-no-crlf", R9112 + " §7.1", chunked(b"5\r\nhelloXX0\r\n\r\n"), 400))
    add(case("chunk-data-bare-lf", R9112 + " §7.1", chunked(b"5\r\nhello\n0\r\n\r\n"), 400))
    add(case("chunk-ext", R9112 + " §7.1.1", chunked(b"5;foo=bar\r\nhello\r\n0\r\n\r\n"),
             200, body=b"hello", needs=["echo"]))
    add(case("chunk-ext-quoted", R9112 + " §7.1.1", chunked(b'5;foo="a b"\r\nhello\r\n0\r\n\r\n'),
             200, body=b"hello", needs=["echo"]))
    add(case("chunk-ext-1mib", "CVE-2024-22019 (unbounded chunk extension)",
             chunked(b"5;a=" + b"b" * 1048576 + b"\r\nhello\r\n0\r\n\r\n"), 400, 413,
             piece_size=16384, pause=0.01, until_answer=True, answer_early=True))
    add(case("chunk-ext-bare-cr", R9112 + " §7.1.1, §2.2 (with CVE-2025-22871)",
             chunked(b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"), 400))
    add(case("chunk-ext-bare-lf", R9112 + " §7.1.1, §2.2 (with CVE-2025-22871)",
             chunked(b"5;a=b\nc\r\nhello\r\n0\r\n\r\n"), 400))
    add(case("trailer-content-length", R9110 + " §6.5.1",
             chunked(b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"), 400))
    add(case("trailer-transfer-encoding", R9110 + " §6.5.1",
             chunked(b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400))
    add(case("trailer-host", R9110 + " §6.5.1", chunked(b"5\r\nhello\r\n0\r\nHost: y\r\n\r\n"), 400))
    add(case("trailer-ok", R9112 + " §7.1.2", chunked(b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
             200, body=b"hello", needs=["echo"]))
    add(case("chunked-end-bare-lf", R9112 + " §7.1, §2.2 (llhttp 8.1.0 takes it)",
             chunked(b"5\r\nhello\r\n0\r\n\n"), 400))
    add(case("trailer-line-bare-lf", R9112 + " §7.1.2, §2.2",
             chunked(b"5\r\nhello\r\n0\r\nX-Trailer: 1\n\r\n"), 400))
    add(case("trailer-end-bare-lf", R9112 + " §7.1.2, §2.2",
             chunked(b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\n"), 400))

    # -- Expect: RFC 9110 §10.1.1
    add(Case("expect-100-continue", R9110 + " §10.1.1",
             [Send(post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"")), Expect(100),
              Send(b"hello"), Expect(200, body=b"hello")], KEEP, needs=["echo"]))
    add(case("expect-unknown", R9110 + " §10.1.1", get(b"Host: x\r\nExpect: foo\r\n"), 417))

    # -- pipelining and splitting: RFC 9112 §9.3.2
    add(Case("pipeline-three", R9112 + " §9.3.2", [Send(get() * 3), Expect(200), Expect(200), Expect(200)],
             KEEP))
    add(Case("pipeline-then-garbage", R9112 + " §9.3.2",
             [Send(get() + b"\x01\x02garbage\r\n\r\n"), Expect(200), Expect(400)], CLOSE))
    add(case("split-writes", R9112 + " §2.2 (a message in several reads)",
             [b"GET / HT", b"TP/1.1\r\nHo", b"st: x\r\n", b"\r\n"], 200, pause=0.1))
    add(case("split-crlf", R9112 + " §2.2 (CRLF across reads)",
             [b"GET / HTTP/1.1\r", b"\nHost: x\r", b"\n\r", b"\n"], 200, pause=0.1))
    add(case("split-every-byte", R9112 + " §2.2 (one byte per read)",
             get(), 200, piece_size=1, pause=0.002))

    # -- method specifics
    add(case("head", R9110 + " §9.3.2; " + R9112 + " §6.3", get(method=b"HEAD"), 200, head=True,
             header="content-length"))
    add(case("connection-close", R9112 + " §9.6", get(b"Host: x\r\nConnection: close\r\n"), 200,
             after=CLOSE))
    return t


# --------------------------------------------------------------------------
# Responses

class Malformed(Exception):
    pass


class Response:
    def __init__(self, status, headers, body, raw):
        self.status = status
        self.headers = headers  # [(lowercase name, value)]
        self.body = body
        self.raw = raw

    def values(self, name):
        return [v for n, v in self.headers if n == name]

    def has_token(self, name, token):
        return any(t.strip().lower() == token for v in self.values(name) for t in v.split(","))


STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?")
BARE_LF = re.compile(rb"(?<!\r)\n")
FIELD_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*")


def parse_response(buf, eof, head):
    """Parses one response at the start of buf. Returns (Response, bytes
    consumed), None if more bytes are needed; raises Malformed."""
    end = buf.find(b"\r\n\r\n")
    top = buf[:MAX_HEAD] if end < 0 else buf[:end + 2]
    if BARE_LF.search(top):
        raise Malformed("bare LF in the response header section")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise Malformed("response header section over 64 KiB")
        if eof:
            raise Malformed("response cut short in its header section")
        if len(buf) >= 5 and not buf.startswith(b"HTTP/"):
            raise Malformed("not a status line")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    m = STATUS_LINE.fullmatch(lines[0])
    if not m:
        raise Malformed("bad status line")
    status = int(m.group(1))
    headers = []
    for line in lines[1:]:
        f = FIELD_LINE.fullmatch(line)
        if not f:
            raise Malformed("bad header line %r" % line[:80])
        headers.append((f.group(1).decode().lower(), f.group(2).decode("latin-1")))
    pos = end + 4
    resp = Response(status, headers, b"", None)
    te = resp.values("transfer-encoding")
    cl = resp.values("content-length")
    if head or status < 200 or status in (204, 304):
        body_end = pos
    elif te:
        codings = [c.strip().lower() for c in ",".join(te).split(",")]
        if codings[-1] == "chunked":
            got = parse_chunked(buf, pos, eof)
            if got is None:
                return None
            resp.body, body_end = got
        elif not eof:
            return None
        else:
            resp.body, body_end = bytes(buf[pos:]), len(buf)
    elif cl:
        if len(set(cl)) != 1 or not cl[0].isdigit():
            raise Malformed("bad Content-Length %r" % cl)
        n = int(cl[0])
        if len(buf) < pos + n:
            if eof:
                raise Malformed("response body cut short (%d of %d bytes)" % (len(buf) - pos, n))
            return None
        resp.body, body_end = bytes(buf[pos:pos + n]), pos + n
    elif not eof:
        return None  # delimited by the close
    else:
        resp.body, body_end = bytes(buf[pos:]), len(buf)
    if head and cl and not cl[0].isdigit():
        raise Malformed("bad Content-Length %r" % cl)
    resp.raw = bytes(buf[:body_end])
    return resp, body_end


def parse_chunked(buf, pos, eof):
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if eof:
                raise Malformed("chunked body cut short")
            return None
        size_text = bytes(buf[pos:eol]).split(b";")[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
            raise Malformed("bad chunk size line %r" % bytes(buf[pos:eol])[:40])
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            while True:  # trailer section
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if eof:
                        raise Malformed("trailer section cut short")
                    return None
                line, pos = buf[pos:eol], eol + 2
                if not line:
                    return bytes(body), pos
        if len(buf) < pos + size + 2:
            if eof:
                raise Malformed("chunk cut short")
            return None
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise Malformed("chunk data not followed by CRLF")
        body += buf[pos:pos + size]
        pos += size + 2


# --------------------------------------------------------------------------
# One connection

class Conn:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.rx = bytearray()       # received, not yet parsed
        self.received = bytearray()  # everything received
        self.sent = 0
        self.eof = False
        self.reset = False
        self.send_error = None
        self.answered_at = None     # bytes sent when the first byte (or close) came

    def close(self):
        self.sock.close()

    def _mark_answer(self):
        if self.answered_at is None:
            self.answered_at = self.sent

    def recv(self):
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            self.eof = self.reset = True
            self._mark_answer()
            return
        if not data:
            self.eof = True
        else:
            self.rx += data
            self.received += data
        self._mark_answer()

    def wait_readable(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.sock], [], [], left)
        if r:
            self.recv()
        return True

    def pause(self, seconds):
        """Sleeps, reading whatever arrives meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.eof and self.wait_readable(deadline):
            pass

    def send(self, data, timeout, until_answer):
        """Writes data, reading whatever arrives meanwhile. Returns False if
        writing stopped early: the server closed or reset, an error, no
        progress for `timeout` seconds, or (until_answer) it answered."""
        view = memoryview(data)
        off = 0
        deadline = time.monotonic() + timeout
        while off < len(view):
            if self.eof or self.send_error or (until_answer and self.received):
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                self.send_error = "no write progress for %g s" % timeout
                return False
            r, w, _ = select.select([self.sock], [self.sock], [], left)
            if r:
                self.recv()
            if w and not self.eof:
                try:
                    n = self.sock.send(view[off:off + 65536])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    self.send_error = errno.errorcode.get(e.errno, str(e))
                    self._mark_answer()
                    return False
                off += n
                self.sent += n
                deadline = time.monotonic() + timeout
        return True

    def response(self, deadline, head):
        """The next response: (Response, None) or (None, why not)."""
        while True:
            try:
                got = parse_response(self.rx, self.eof, head)
            except Malformed as e:
                return None, "malformed response (%s)" % e
            if got is not None:
                resp, used = got
                del self.rx[:used]
                return resp, None
            if self.eof:
                return None, "connection %s with no response" % ("reset" if self.reset else "closed")
            if not self.wait_readable(deadline):
                return None, "no response within the timeout"

    def wait_close(self, deadline):
        while not self.eof:
            if not self.wait_readable(deadline):
                return False
        return True


# --------------------------------------------------------------------------
# Running a case

class Result:
    def __init__(self, c):
        self.case = c
        self.outcome = "pass"
        self.problems = []
        self.statuses = []   # every response's status, interim ones too
        self.state = ""      # what the connection did at the end
        self.note = ""       # e.g. when the server answered
        self.sent = None     # bytes of the case's request written
        self.received = b""
        self.seconds = 0.0

    def fail(self, why):
        self.outcome = "fail"
        self.problems.append(why)

    def seen(self):
        if self.outcome == "n/a":
            return "n/a"
        got = ",".join(str(s) for s in self.statuses) or "none"
        text = (got + " " + self.state).strip()
        return text + (" (%s)" % self.note if self.note else "")

    def as_dict(self):
        c = self.case
        sent = c.sent_bytes()
        return {
            "name": c.name, "ref": c.ref, "expected": c.expected(), "outcome": self.outcome,
            "seen": self.seen(), "statuses": self.statuses, "state": self.state,
            "problems": self.problems, "seconds": round(self.seconds, 3),
            "bytes_sent": self.sent or 0, "request_bytes": len(sent),
            "request": show(sent, SHOW_SENT), "response": show(self.received, SHOW_RECEIVED),
        }


def show(data, limit):
    text = repr(bytes(data[:limit]))
    if len(data) > limit:
        text += " ... (%d bytes)" % len(data)
    return text


def run_case(c, host, port, timeout, na_features):
    res = Result(c)
    missing = [n for n in c.needs if n in na_features]
    if missing:
        res.outcome = "n/a"
        res.problems.append("needs " + ",".join(missing))
        return res
    start = time.monotonic()
    try:
        conn = Conn(host, port, timeout)
    except OSError as e:
        res.fail("connect: %s" % e)
        return res
    try:
        run_steps(c, conn, res, timeout)
    finally:
        if res.sent is None:
            res.sent = conn.sent
        res.received = bytes(conn.received)
        res.seconds = time.monotonic() - start
        conn.close()
    return res


def run_steps(c, conn, res, timeout):
    last = None
    for step in c.steps:
        if isinstance(step, Send):
            before = conn.sent
            for i, piece in enumerate(step.pieces):
                if i and step.pause:
                    conn.pause(step.pause)
                if not conn.send(piece, timeout, step.until_answer):
                    break
            if step.answer_early:
                got = (conn.answered_at or conn.sent) - before
                if conn.answered_at is None or got >= step.size:
                    res.fail("server took all %d bytes before answering" % step.size)
                else:
                    res.note = "answered after %d of %d bytes" % (got, step.size)
            continue
        deadline = time.monotonic() + timeout
        while True:
            resp, why = conn.response(deadline, step.head)
            if resp is None:
                res.fail("expected %s: %s" % (step.text(), why + send_note(conn)))
                res.state = short_why(why)
                return
            res.statuses.append(resp.status)
            if resp.status < 200 and not any(s < 200 for s in step.statuses):
                continue  # an interim response nobody asked about
            break
        last = resp
        if resp.status not in step.statuses:
            res.fail("expected %s, got %d" % (step.text(), resp.status))
        if step.body is not None and resp.body != step.body:
            res.fail("expected body %s, got %s" % (show(step.body, 60), show(resp.body, 60)))
        if step.header and not resp.values(step.header):
            res.fail("no %s header" % step.header)
        if resp.status >= 400 and c.after != KEEP and not close_wanted_ok(c, resp):
            res.fail("%d response without Connection: close" % resp.status)
    mode = c.after
    if mode == AUTO:
        mode = "either" if last.status < 400 or last.status in (404, 405) else CLOSE
    if mode == CLOSE:
        after_close(conn, res, timeout)
    else:
        after_keep(conn, res, timeout, last, mode == "either")


def close_wanted_ok(c, resp):
    if c.after == AUTO and resp.status in (404, 405):
        return True
    return resp.has_token("connection", "close")


def send_note(conn):
    if conn.send_error:
        return " (writing stopped: %s after %d bytes)" % (conn.send_error, conn.sent)
    return ""


def short_why(why):
    if why.startswith("malformed"):
        return "malformed"
    if why.startswith("no response within"):
        return "timeout"
    return "reset" if "reset" in why else "closed"


def state_now(conn):
    if conn.eof:
        return "reset" if conn.reset else "closed"
    return "open"


def describe_stray(conn, res):
    try:
        got = parse_response(conn.rx, conn.eof, False)
    except Malformed:
        got = None
    if got is not None:
        res.statuses.append(got[0].status)
        return "a second response (%d)" % got[0].status
    return "%d stray bytes %s" % (len(conn.rx), show(conn.rx, 60))


def after_close(conn, res, timeout):
    closed = conn.wait_close(time.monotonic() + timeout)
    if conn.rx:
        res.fail("after the response: " + describe_stray(conn, res))
    if closed:
        res.state = state_now(conn)
    else:
        res.state = "open"
        res.fail("connection still open %g s after the response" % timeout)


def after_keep(conn, res, timeout, last, either):
    conn.pause(SETTLE)
    if conn.rx:
        res.fail("after the response: " + describe_stray(conn, res))
        res.state = state_now(conn)
        return
    if conn.eof:
        res.state = state_now(conn)
        if not either:
            res.fail("connection %s; it should stay usable" % res.state)
        return
    if last.has_token("connection", "close") and not either:
        res.fail("response says Connection: close; it should keep the connection")
    res.sent = conn.sent
    if not conn.send(FOLLOW_UP, timeout, False):
        res.state = "closed"
        res.fail("follow-up GET not written (%s)" % (conn.send_error or "closed"))
        return
    resp, why = conn.response(time.monotonic() + timeout, False)
    while resp is not None and resp.status < 200:
        resp, why = conn.response(time.monotonic() + timeout, False)
    if resp is None:
        res.state = "follow-up: " + why
        res.fail("follow-up GET: " + why)
    elif resp.status != 200:
        res.state = "follow-up %d" % resp.status
        res.fail("follow-up GET got %d" % resp.status)
    else:
        res.state = "kept"


# --------------------------------------------------------------------------
# Command line

def usage_text():
    lines = []
    with open(__file__, encoding="utf-8") as f:
        next(f)
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(re.sub(r"^# ?", "", line.rstrip("\n")))
    return "\n".join(lines) + "\n"


def select_cases(table, only):
    if not only:
        return table
    patterns = [p for arg in only for p in arg.split(",") if p]
    chosen = [c for c in table if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(c.name, p) for c in table)]
    if unknown:
        print("http_hostile: no case matches: " + ", ".join(unknown), file=sys.stderr)
        sys.exit(2)
    return chosen


def main():
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--n-a", action="append", default=[], dest="na")
    ap.add_argument("-h", "--help", action="store_true")
    args = ap.parse_args()
    if args.help:
        sys.stdout.write(usage_text())
        return 0
    table = select_cases(build_table(), args.only)
    names = [c.name for c in table]
    assert len(names) == len(set(names)), "duplicate case names"
    if args.list:
        width = max(len(c.name) for c in table)
        for c in table:
            print("%-*s  %-22s %s" % (width, c.name, c.expected(), c.ref))
        return 0
    if args.port is None:
        print("http_hostile: --port is required (see --help)", file=sys.stderr)
        return 2
    na = {f for arg in args.na for f in arg.split(",") if f}
    run = lambda c: run_case(c, args.host, args.port, args.timeout, na)
    if args.jobs > 1:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run, table))
    else:
        results = []
        for c in table:
            results.append(run(c))
            if not args.json:
                report(results[-1])
    if args.jobs > 1 and not args.json:
        for r in results:
            report(r)
    passed = sum(r.outcome == "pass" for r in results)
    failed = sum(r.outcome == "fail" for r in results)
    na_count = sum(r.outcome == "n/a" for r in results)
    if args.json:
        json.dump({"target": "%s:%d" % (args.host, args.port), "passed": passed, "failed": failed,
                   "na": na_count, "results": [r.as_dict() for r in results]},
                  sys.stdout, indent=1)
        print()
    else:
        print("%d passed, %d failed%s" % (passed, failed, ", %d n/a" % na_count if na_count else ""))
    return 0 if failed == 0 else 1


WIDTH = 30


def report(r):
    c = r.case
    tag = {"pass": "PASS", "fail": "FAIL", "n/a": "n/a "}[r.outcome]
    print("%s  %-*s expected %-18s got %s" % (tag, WIDTH, c.name, c.expected(), r.seen()), flush=True)
    if r.outcome == "fail":
        for p in r.problems:
            print("      - " + p)
        sent = c.sent_bytes()
        print("      sent (%d of %d bytes): %s" % (r.sent or 0, len(sent), show(sent, SHOW_SENT)))
        print("      received: %s" % show(r.received, SHOW_RECEIVED), flush=True)


if __name__ == "__main__":
    sys.exit(main())
