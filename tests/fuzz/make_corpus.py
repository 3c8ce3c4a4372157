#!/usr/bin/env python3
"""Writes the seed corpora of the HTTP server fuzz targets:
tests/fuzz/corpus/http_request/, valid requests of every kind and one file
per request smuggling shape, each 4 control bytes (see
tests/fuzz/http_server.c) and the bytes the client sends;
tests/fuzz/corpus/http_chunked/, chunked bodies, each the 4 control bytes,
a byte of the target's flags (see tests/fuzz/http_chunked.c) and the body;
tests/fuzz/corpus/http_response/, what a server answers the client's calls,
each 4 control bytes (see tests/fuzz/http_response.c) and the answers to
its requests in turn, cut by the separator.

usage: tests/fuzz/make_corpus.py   (rewrites the seed files it names; the
regression files found by fuzzing, named crash-*, are left alone)"""
import os

HALF_CLOSE, SHORT_IO, SLOW = 4, 8, 16
SMALL, FEW, MIDDLE = 1, 2, 3
H = b"Host: a\r\n"


def ctrl(flags=HALF_CLOSE, style=0, pieces=(0, 0), seed=0):
    return bytes([flags | style << 5, pieces[0], pieces[1], seed])


def post(fields, body=b"", line=b"POST /p HTTP/1.1\r\n"):
    return line + H + fields + b"\r\n" + body


TE = b"Transfer-Encoding: chunked\r\n"
SEEDS = {
    # Valid requests.
    "get": (ctrl(), b"GET / HTTP/1.1\r\n" + H + b"\r\n"),
    "get-http10-query": (ctrl(style=1), b"GET /x?y=1&z HTTP/1.0\r\n\r\n"),
    "head": (ctrl(style=2), b"HEAD /h HTTP/1.1\r\n" + H + b"\r\n"),
    "post-length": (ctrl(style=1), post(b"Content-Length: 5\r\n", b"hello")),
    "post-chunked": (ctrl(style=2), post(TE, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")),
    "pipelined": (ctrl(style=3), b"GET /1 HTTP/1.1\r\n" + H + b"\r\n"
                  + post(b"Content-Length: 3\r\n", b"abc")
                  + post(TE, b"1\r\nx\r\n0\r\n\r\n") + b"GET /4 HTTP/1.1\r\n" + H + b"\r\n"),
    "pipelined-pieces": (ctrl(flags=HALF_CLOSE | SHORT_IO, style=4, pieces=(3, 7), seed=5),
                         post(b"Content-Length: 4\r\n", b"abcd") + post(TE, b"2\r\nhi\r\n0\r\n\r\n")
                         + b"GET /3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /4 HTTP/1.0\r\n\r\n"),
    "expect-continue": (ctrl(style=1), post(b"Expect: 100-continue\r\nContent-Length: 3\r\n", b"abc")),
    "expect-continue-unread": (ctrl(style=4), post(b"Expect: 100-continue\r\nContent-Length: 3\r\n", b"abc")),
    "http10-keepalive": (ctrl(style=2), b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                         b"GET /b HTTP/1.0\r\n\r\n"),
    "options-star": (ctrl(), b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n"),
    "absolute-form": (ctrl(), b"GET http://a/p?q=1 HTTP/1.1\r\n" + H + b"\r\n"),
    "trailers": (ctrl(style=1), post(TE, b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-More: two\r\n\r\n")),
    "chunk-extensions": (ctrl(style=1), post(TE, b"5;a=b;c=\"d\"\r\nhello\r\n0;last\r\n\r\n")),
    "slow-client": (ctrl(flags=HALF_CLOSE | SLOW, pieces=(9, 9), style=5),
                    post(b"Content-Length: 10\r\n", b"0123456789")),
    "keepalive-timeout": (ctrl(flags=0, style=6), b"GET / HTTP/1.1\r\n" + H + b"\r\nGET /partial HTTP/1.1\r\n"),
    "few-requests": (ctrl(flags=HALF_CLOSE | FEW, style=7), (b"GET / HTTP/1.1\r\n" + H + b"\r\n") * 4),
    "small-limits": (ctrl(flags=HALF_CLOSE | SMALL, style=7), post(b"Content-Length: 70\r\n", b"x" * 70)),
    "small-url": (ctrl(flags=HALF_CLOSE | SMALL, style=6), b"GET /" + b"u" * 40 + b" HTTP/1.1\r\n" + H + b"\r\n"),
    "many-fields": (ctrl(flags=HALF_CLOSE | MIDDLE), b"GET / HTTP/1.1\r\n" + H
                    + b"".join(b"X-%d: v\r\n" % i for i in range(24)) + b"\r\n"),
    "upgrade": (ctrl(), b"GET /ws HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
    "partial-body-timeout": (ctrl(flags=FEW, style=1), post(b"Content-Length: 9\r\n", b"abc")),
    # Request smuggling shapes and other malformed heads.
    "smuggle-cl-te": (ctrl(), post(b"Content-Length: 6\r\n" + TE, b"0\r\n\r\nGET /s HTTP/1.1\r\n" + H + b"\r\n")),
    "smuggle-te-cl": (ctrl(), post(TE + b"Content-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n")),
    "smuggle-dup-cl": (ctrl(), post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!")),
    "smuggle-cl-list": (ctrl(), post(b"Content-Length: 5, 5\r\n", b"hello")),
    "smuggle-cl-sign": (ctrl(), post(b"Content-Length: +5\r\n", b"hello")),
    "smuggle-te-dup": (ctrl(), post(TE + TE, b"0\r\n\r\n")),
    "smuggle-te-not-last": (ctrl(), post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n")),
    "smuggle-te-gzip": (ctrl(), post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n")),
    "smuggle-te-http10": (ctrl(), post(TE, b"0\r\n\r\n", line=b"POST / HTTP/1.0\r\n")),
    "smuggle-te-space-colon": (ctrl(), post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n")),
    "smuggle-te-xchunked": (ctrl(), post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n")),
    "smuggle-obs-fold": (ctrl(), post(b"X: a\r\n b\r\nContent-Length: 1\r\n", b"z")),
    "smuggle-obs-fold-te": (ctrl(), post(b"Transfer-Encoding: identity\r\n chunked\r\n", b"0\r\n\r\n")),
    "smuggle-bare-cr": (ctrl(), post(b"X: a\rContent-Length: 1\r\n", b"z")),
    "smuggle-bare-lf": (ctrl(), b"GET / HTTP/1.1\n" + b"Host: a\n\n"),
    "smuggle-nul-value": (ctrl(), b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n"),
    "smuggle-empty-name": (ctrl(), b"GET / HTTP/1.1\r\n" + H + b": x\r\n\r\n"),
    "smuggle-chunk-lf": (ctrl(), post(TE, b"5\nhello\n0\n\n")),
    "smuggle-chunk-no-crlf": (ctrl(), post(TE, b"5\r\nhelloX0\r\n\r\n")),
    "smuggle-chunk-size-overflow": (ctrl(), post(TE, b"1ffffffffffffffff\r\nx\r\n0\r\n\r\n")),
    "smuggle-chunk-ext-ctl": (ctrl(), post(TE, b"1;a\x01b\r\nx\r\n0\r\n\r\n")),
    "smuggle-chunk-ext-long": (ctrl(), post(TE, b"1;" + b"e" * 1100 + b"\r\nx\r\n0\r\n\r\n")),
    "smuggle-trailer-cl": (ctrl(), post(TE, b"0\r\nContent-Length: 5\r\n\r\nhello")),
    "smuggle-leading-crlf": (ctrl(), b"\r\nGET / HTTP/1.1\r\n" + H + b"\r\n"),
    "bad-host-dup": (ctrl(), b"GET / HTTP/1.1\r\n" + H + H + b"\r\n"),
    "bad-host-none": (ctrl(), b"GET / HTTP/1.1\r\n\r\n"),
    "bad-version": (ctrl(), b"GET / HTTP/2.0\r\n" + H + b"\r\n"),
    "bad-method": (ctrl(), b"BREW / HTTP/1.1\r\n" + H + b"\r\n"),
    "bad-connect": (ctrl(), b"CONNECT a:443 HTTP/1.1\r\n" + H + b"\r\n"),
    "bad-expect": (ctrl(), post(b"Expect: 200-ok\r\nContent-Length: 1\r\n", b"z")),
    "bad-target": (ctrl(), b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n"),
    # What fuzzing found, fixed since: regression inputs.
    "regress-silent-client": (ctrl(flags=0), b""),
    "regress-head-error-body": (ctrl(style=7), b"HEAD / HTTP/1.1\r\n" + H + b"\r\n"),
    "regress-half-close-drops": (ctrl(style=5), (b"GET / HTTP/1.1\r\n" + H + b"\r\n") * 2),
    "regress-trailer-bare-lf": (ctrl(), post(TE, b"0\r\n\nGET /s HTTP/1.1\r\n" + H + b"\r\n")),
}


EXPECT, FOLLOW = 1, 2
CHUNKED = {
    "two-chunks": (ctrl(), FOLLOW, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    "empty": (ctrl(style=1), FOLLOW, b"0\r\n\r\n"),
    "pieces": (ctrl(flags=HALF_CLOSE | SHORT_IO, style=1, pieces=(1, 2), seed=3), FOLLOW,
               b"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n"),
    "upper-hex": (ctrl(style=2), 0, b"1F\r\n" + b"x" * 31 + b"\r\n0\r\n\r\n"),
    "leading-zeros": (ctrl(style=3), FOLLOW, b"0003\r\nabc\r\n000\r\n\r\n"),
    "extensions": (ctrl(style=1), FOLLOW, b"5;a=b;c=\"d e\"\r\nhello\r\n0;last\r\n\r\n"),
    "trailers": (ctrl(style=2), FOLLOW, b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-More: two\r\n\r\n"),
    "expect": (ctrl(style=0), EXPECT | FOLLOW, b"4\r\nwxyz\r\n0\r\n\r\n"),
    "unread": (ctrl(style=4), FOLLOW, b"4\r\nwxyz\r\n0\r\n\r\n"),
    "send-then-read": (ctrl(style=5), FOLLOW, b"2\r\nhi\r\n0\r\n\r\n"),
    "over-limit": (ctrl(flags=HALF_CLOSE | SMALL, style=1), FOLLOW, b"41\r\n" + b"y" * 65 + b"\r\n0\r\n\r\n"),
    "slow": (ctrl(flags=HALF_CLOSE | SLOW | FEW, style=1, pieces=(4, 4)), FOLLOW,
             b"5\r\nhello\r\n0\r\n\r\n"),
    "cut-short": (ctrl(flags=HALF_CLOSE, style=1), 0, b"a\r\nonly"),
    "open-ended": (ctrl(flags=FEW, style=1), 0, b"5\r\nhello\r\n"),
    "bad-lf": (ctrl(style=1), FOLLOW, b"5\nhello\n0\n\n"),
    "bad-no-crlf": (ctrl(style=1), FOLLOW, b"5\r\nhelloX0\r\n\r\n"),
    "bad-size-overflow": (ctrl(style=1), FOLLOW, b"1ffffffffffffffff\r\nx\r\n0\r\n\r\n"),
    "bad-size-sign": (ctrl(style=1), FOLLOW, b"+5\r\nhello\r\n0\r\n\r\n"),
    "bad-size-space": (ctrl(style=1), FOLLOW, b"5 \r\nhello\r\n0\r\n\r\n"),
    "bad-ext-ctl": (ctrl(style=1), FOLLOW, b"1;a\x01b\r\nx\r\n0\r\n\r\n"),
    "bad-ext-long": (ctrl(style=1), FOLLOW, b"1;" + b"e" * 1100 + b"\r\nx\r\n0\r\n\r\n"),
    "bad-trailer-cl": (ctrl(style=1), FOLLOW, b"0\r\nContent-Length: 5\r\n\r\nhello"),
    "bad-trailer-bare-lf": (ctrl(style=1), FOLLOW, b"0\r\nX: 1\n\r\n"),
    "bad-trailer-fold": (ctrl(style=1), FOLLOW, b"0\r\nX: 1\r\n 2\r\n\r\n"),
    "bad-trailer-many": (ctrl(style=1), FOLLOW, b"0\r\n" + b"".join(b"T%d: v\r\n" % i for i in range(40)) + b"\r\n"),
}


# http_response: calls less one (bits 0-1), method (2-3), faults (4), way of
# reading (5-7); the client's limits.
GET, HEAD, POST, POST_EXPECT = 0, 1, 2, 3
BODY, PIECES, FETCH, NONE, SOME = 0, 1, 2, 3, 4
SMALL_HEAD, FEW_FIELDS, SMALL_BODY, NO_RETRY, CLOSE_REQ = 1, 2, 4, 8, 16
SEP = b"\xfe\xff\xfe\xff"


def rctrl(calls=1, method=GET, read=BODY, faults=False, limits=0, seed=0):
    return bytes([(calls - 1) | method << 2 | (16 if faults else 0) | read << 5, limits, 0, seed])


def resp(status=b"200 OK", fields=b"", body=b"", length=True):
    cl = b"Content-Length: %d\r\n" % len(body) if length else b""
    return b"HTTP/1.1 " + status + b"\r\n" + fields + cl + b"\r\n" + body


def chunked(body_chunks, trailer=b""):
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body_chunks) + b"0\r\n" + trailer + b"\r\n"


TEC = b"Transfer-Encoding: chunked\r\n"
RESPONSES = {
    "ok": (rctrl(), [resp(body=b"hello")]),
    "ok-pieces": (rctrl(read=PIECES, faults=True, seed=2), [resp(body=b"0123456789abcdef")]),
    "chunked": (rctrl(read=PIECES), [resp(fields=TEC, length=False, body=chunked([b"he", b"llo"]))]),
    "chunked-trailer": (rctrl(), [resp(fields=TEC, length=False,
                                       body=chunked([b"abc"], b"X-Sum: 1\r\n"))]),
    "chunked-ext": (rctrl(), [resp(fields=TEC, length=False, body=b"3;a=b\r\nabc\r\n0\r\n\r\n")]),
    "until-close": (rctrl(), [b"HTTP/1.1 200 OK\r\n\r\nto the end"]),
    "http10": (rctrl(), [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"]),
    "no-reason": (rctrl(), [b"HTTP/1.1 204\r\n\r\n"]),
    "head": (rctrl(method=HEAD), [resp(fields=b"Content-Length: 99\r\n", length=False)]),
    "not-modified": (rctrl(), [resp(b"304 Not Modified", TEC, length=False)]),
    "continue-then-ok": (rctrl(), [b"HTTP/1.1 100 Continue\r\n\r\n" + resp(body=b"x")]),
    "expect-100": (rctrl(method=POST_EXPECT), [b"HTTP/1.1 100 Continue\r\n\r\n" + resp(body=b"ok")]),
    "expect-refused": (rctrl(calls=2, method=POST_EXPECT), [resp(b"417 Expectation Failed"), resp()]),
    "keepalive-3": (rctrl(calls=3, read=PIECES), [resp(body=b"one"), resp(fields=TEC, length=False,
                                                                              body=chunked([b"two"])),
                                                   resp(body=b"three")]),
    "keepalive-close": (rctrl(calls=2), [resp(fields=b"Connection: close\r\n", body=b"a"), resp(body=b"b")]),
    "keepalive-http10": (rctrl(calls=2), [b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                                          b"Content-Length: 1\r\n\r\na", resp(body=b"b")]),
    "keepalive-timeout": (rctrl(calls=2), [resp(fields=b"Keep-Alive: timeout=1\r\n", body=b"a"),
                                           resp(body=b"b")]),
    "retry": (rctrl(calls=2), [resp(body=b"a"), b"", resp(body=b"again")]),
    "retry-post": (rctrl(calls=2, method=HEAD), [resp(), b"", resp()]),
    "extra-bytes": (rctrl(calls=2), [resp(body=b"a") + b"junk", resp(body=b"b")]),
    "unread-body": (rctrl(calls=2, read=NONE), [resp(body=b"left"), resp(body=b"b")]),
    "some-body": (rctrl(calls=2, read=SOME), [resp(body=b"0123456789"), resp()]),
    "fetch": (rctrl(read=FETCH, limits=SMALL_BODY), [resp(body=b"z" * 65)]),
    "limits": (rctrl(calls=2, limits=SMALL_HEAD | FEW_FIELDS),
               [resp(fields=b"".join(b"X-%d: v\r\n" % i for i in range(5))), resp(fields=b"X: " + b"v" * 300 + b"\r\n")]),
    "close-req": (rctrl(calls=2, limits=CLOSE_REQ | NO_RETRY), [resp(), resp()]),
    "bad-obs-fold": (rctrl(), [b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"]),
    "bad-bare-lf": (rctrl(), [b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"]),
    "bad-cl-te": (rctrl(), [resp(fields=TEC, body=chunked([b"x"]))]),
    "bad-te-gzip": (rctrl(), [resp(fields=b"Transfer-Encoding: gzip\r\n", length=False, body=b"x")]),
    "bad-cl-twice": (rctrl(), [resp(fields=b"Content-Length: 1\r\n", body=b"x")]),
    "bad-status": (rctrl(), [b"HTTP/1.1 20 OK\r\n\r\n"]),
    "bad-101": (rctrl(), [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"]),
    "bad-chunk": (rctrl(), [resp(fields=TEC, length=False, body=b"5\r\nabc\r\n0\r\n\r\n")]),
    # What fuzzing found, fixed since: regression inputs.
    "regress-trailer-bare-lf": (rctrl(calls=2), [resp(fields=TEC, length=False, body=b"1\r\nx\r\n0\r\n\n"),
                                                 resp()]),
    # ... with a Transfer-Encoding trailer field, which clears llhttp's chunked flag.
    "regress-trailer-te-bare-lf": (rctrl(calls=2, read=PIECES),
                                   [resp(fields=TEC, length=False,
                                         body=b"1\r\nx\r\n0\r\nTransfer-Encoding: gzip\r\n\n"), resp()]),
    "bad-reason-ctl": (rctrl(), [b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n"]),
    "short": (rctrl(), [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]),
}


def write(name, seeds):
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", name)
    os.makedirs(out, exist_ok=True)
    for seed, data in seeds.items():
        with open(os.path.join(out, seed), "wb") as f:
            f.write(b"".join(data))


def main():
    write("http_request", SEEDS)
    write("http_chunked", {k: (c, bytes([flags]), body) for k, (c, flags, body) in CHUNKED.items()})
    write("http_response", {k: (c, SEP.join(segs)) for k, (c, segs) in RESPONSES.items()})


if __name__ == "__main__":
    main()
