#!/usr/bin/env python3
"""Writes the seed corpora of the WebSocket fuzz targets
(tests/fuzz/corpus/ws_frames/, ws_frames_deflate/ and ws_handshake/):
frames of every kind (masked for keel the server, unmasked for keel the
client), fragments, control frames, closes, protocol errors; compressed
messages (permessage-deflate: windows, context takeover, final blocks,
bombs); upgrade requests and responses, good and bad. Each file is 4
control bytes (see tests/fuzz/ws_frames.c and ws_handshake.c) and the bytes
the peer sends.

usage: tests/fuzz/make_ws_corpus.py   (rewrites the seed files it names;
regression files named crash-* are left alone)"""
import os
import struct
import zlib

CLIENT, DEFLATE, NO_TAKEOVER, SHORT_IO, PIECES = 1, 2, 4, 8, 16


def ctrl(flags=0, maxsel=0, piece=0, bits=7, seed=0):
    return bytes([flags | maxsel << 5, piece, bits, seed])


def frame(op, payload=b"", fin=True, rsv=0, mask=True, key=b"\x01\x02\x03\x04"):
    b0 = (0x80 if fin else 0) | rsv << 4 | op
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def deflated(data, bits=15):
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


def deflated_many(messages, bits=15):
    """Messages compressed by one stream (context takeover)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    return [(c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH))[:-4] for m in messages]


def deflated_final(data):
    """A message whose deflate stream ends (BFINAL), then the 0x00 §7.2.3.4 allows."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FINISH) + b"\0"


def close(code=1000, reason=b"", mask=True):
    return frame(8, struct.pack(">H", code) + reason, mask=mask)


def frames_seeds():
    s = {}
    for side, m in (("srv", True), ("cli", False)):
        f = 0 if m else CLIENT
        s[side + "-text"] = (ctrl(f), frame(1, b"hello", mask=m) + close(mask=m))
        s[side + "-binary-126"] = (ctrl(f), frame(2, bytes(range(126)), mask=m) + close(mask=m))
        s[side + "-binary-70000"] = (ctrl(f | SHORT_IO), frame(2, b"x" * 70000, mask=m) + close(mask=m))
        s[side + "-fragments"] = (ctrl(f, piece=3), frame(1, b"he", fin=False, mask=m) +
                                  frame(9, b"ping", mask=m) + frame(0, b"l", fin=False, mask=m) +
                                  frame(0, b"lo", mask=m) + close(mask=m))
        s[side + "-utf8-split"] = (ctrl(f | PIECES), frame(1, "é€😀".encode()[:3], fin=False, mask=m) +
                                   frame(0, "é€😀".encode()[3:], mask=m) + close(mask=m))
        s[side + "-bad-utf8"] = (ctrl(f), frame(1, b"\xed\xa0\x80", mask=m))
        s[side + "-rsv"] = (ctrl(f), frame(1, b"x", rsv=2, mask=m))
        s[side + "-opcode"] = (ctrl(f), frame(3, b"x", mask=m))
        s[side + "-close-1"] = (ctrl(f), frame(8, b"\x03", mask=m))
        s[side + "-close-bad"] = (ctrl(f), close(1005, mask=m))
        s[side + "-close-reason"] = (ctrl(f), close(4000, "fin ✓".encode(), mask=m))
        s[side + "-too-big"] = (ctrl(f, 1), frame(2, b"y" * 65, mask=m))
        s[side + "-ping-long"] = (ctrl(f), bytes([0x89, (0x80 if m else 0) | 126, 0, 126]))
        s[side + "-wrong-mask"] = (ctrl(f), frame(1, b"x", mask=not m))
    return s


def deflate_seeds():
    s = {}
    for side, m in (("srv", True), ("cli", False)):
        f = (0 if m else CLIENT) | DEFLATE
        d = deflated(b"Hello" * 100)
        s[side + "-deflate"] = (ctrl(f), frame(1, d, rsv=4, mask=m) + close(mask=m))
        s[side + "-deflate-notakeover"] = (ctrl(f | NO_TAKEOVER),
                                           frame(2, deflated(b"abc" * 50), rsv=4, mask=m) +
                                           frame(2, deflated(b"abc" * 50), rsv=4, mask=m) + close(mask=m))
        bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
        b = bomb.compress(b"\0" * 2000000) + bomb.flush(zlib.Z_SYNC_FLUSH)
        s[side + "-deflate-bomb"] = (ctrl(f, 2), frame(2, b[:-4], rsv=4, mask=m))
        s[side + "-deflate-rsv-cont"] = (ctrl(f), frame(1, b"a", fin=False, mask=m) +
                                         frame(0, b"b", rsv=4, mask=m))
        one, two = deflated_many([b"the same words again " * 3, b"the same words again " * 4])
        s[side + "-deflate-takeover"] = (ctrl(f), frame(1, one, rsv=4, mask=m) +
                                         frame(1, two, rsv=4, mask=m) + close(mask=m))
        s[side + "-deflate-window8"] = (ctrl(f, bits=0), frame(2, deflated(bytes(range(256)) * 3, 9),
                                                               rsv=4, mask=m) + close(mask=m))
        s[side + "-deflate-fragments"] = (ctrl(f, piece=5), frame(1, d[:7], fin=False, rsv=4, mask=m) +
                                          frame(9, b"p", mask=m) + frame(0, d[7:], mask=m) +
                                          close(mask=m))
        s[side + "-deflate-final"] = (ctrl(f), frame(1, deflated_final(b"final " * 20), rsv=4, mask=m) +
                                      frame(1, deflated(b"next"), rsv=4, mask=m) + close(mask=m))
        s[side + "-deflate-empty"] = (ctrl(f), frame(2, b"\0", rsv=4, mask=m) +
                                      frame(2, b"", rsv=4, mask=m) + close(mask=m))
        s[side + "-deflate-mixed"] = (ctrl(f | PIECES), frame(1, b"plain", mask=m) +
                                      frame(1, deflated("é€😀".encode() * 4), rsv=4, mask=m) +
                                      close(mask=m))
        s[side + "-deflate-bad-utf8"] = (ctrl(f), frame(1, deflated(b"\xed\xa0\x80"), rsv=4, mask=m))
        s[side + "-deflate-corrupt"] = (ctrl(f), frame(2, b"\xff\xff\xff", rsv=4, mask=m))
        s[side + "-deflate-too-big"] = (ctrl(f, 1), frame(2, deflated(b"z" * 65), rsv=4, mask=m))
    return s


KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
LAB_ACCEPT = b"YkUc2ynR0dEy9G2rLUseCUOLDGY="


def req(extra=b"", version=b"13", key=KEY, method=b"GET"):
    return (method + b" / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: " + version + b"\r\n" +
            extra + b"\r\n")


def resp(extra=b"", accept=ACCEPT, status=b"101 Switching Protocols"):
    return (b"HTTP/1.1 " + status + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n")


def handshake_seeds():
    s = {
        "srv-good": (ctrl(), req() + frame(1, b"hi") + close()),
        "srv-deflate": (ctrl(DEFLATE), req(b"Sec-WebSocket-Extensions: permessage-deflate; "
                                            b"client_max_window_bits\r\n") + close()),
        "srv-deflate-params": (ctrl(DEFLATE), req(b"Sec-WebSocket-Extensions: permessage-deflate; "
                                                   b"server_no_context_takeover; server_max_window_bits=10, "
                                                   b"permessage-deflate\r\n")),
        "srv-deflate-bad": (ctrl(DEFLATE), req(b"Sec-WebSocket-Extensions: permessage-deflate; x=1\r\n")),
        "srv-proto": (ctrl(4), req(b"Sec-WebSocket-Protocol: v1, v2\r\nOrigin: http://o\r\n")),
        "srv-origin-bad": (ctrl(4), req(b"Origin: ftp://o\r\n")),
        "srv-version": (ctrl(), req(version=b"8")),
        "srv-key": (ctrl(), req(key=b"abc")),
        "srv-post": (ctrl(), req(method=b"POST")),
        "srv-plain": (ctrl(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        "srv-pipelined": (ctrl(SHORT_IO, piece=5), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" + req() + frame(2, b"x")),
        "cli-good": (ctrl(CLIENT), resp() + frame(1, b"hi", mask=False) + close(mask=False)),
        "cli-200": (ctrl(CLIENT), resp(status=b"200 OK")),
        "cli-accept": (ctrl(CLIENT), resp(accept=b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=")),
        "cli-ext": (ctrl(CLIENT | DEFLATE), resp(b"Sec-WebSocket-Extensions: permessage-deflate; "
                                                 b"server_no_context_takeover\r\n")),
        "cli-ext-unoffered": (ctrl(CLIENT), resp(b"Sec-WebSocket-Extensions: permessage-deflate\r\n")),
        "cli-proto": (ctrl(CLIENT | 4), resp(b"Sec-WebSocket-Protocol: chat\r\n")),
        "cli-proto-bad": (ctrl(CLIENT | 4), resp(b"Sec-WebSocket-Protocol: other\r\n")),
        # What fuzzing found, fixed since: regression inputs. LAB_ACCEPT answers
        # the key keel sends with these control bytes (lab seed 1).
        "regress-cli-reason-nul": (ctrl(CLIENT | 4), resp(b"Sec-WebSocket-Protocol: chat\r\n",
                                                         accept=LAB_ACCEPT,
                                                         status=b"101 Switching\0Protocols")),
    }
    return s


def write(name, seeds):
    d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", name)
    os.makedirs(d, exist_ok=True)
    for k, (c, body) in seeds.items():
        with open(os.path.join(d, k), "wb") as f:
            f.write(c + body)


if __name__ == "__main__":
    write("ws_frames", frames_seeds())
    write("ws_frames_deflate", deflate_seeds())
    write("ws_handshake", handshake_seeds())
