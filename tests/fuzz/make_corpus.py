#!/usr/bin/env python3
"""Writes the seed corpora of the HTTP server fuzz targets:
tests/fuzz/corpus/http_request/, valid requests of every kind and one file
per request smuggling shape, each 4 control bytes (see
tests/fuzz/http_server.c) and the bytes the client sends;
tests/fuzz/corpus/http_chunked/, chunked bodies, each the 4 control bytes,
a byte of the target's flags (see tests/fuzz/http_chunked.c) and the body.

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


def write(name, seeds):
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", name)
    os.makedirs(out, exist_ok=True)
    for seed, data in seeds.items():
        with open(os.path.join(out, seed), "wb") as f:
            f.write(b"".join(data))


def main():
    write("http_request", SEEDS)
    write("http_chunked", {k: (c, bytes([flags]), body) for k, (c, flags, body) in CHUNKED.items()})


if __name__ == "__main__":
    main()
