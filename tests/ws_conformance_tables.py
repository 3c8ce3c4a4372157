"""The tables both of keel's WebSocket conformance scripts run, one side
being the raw script and the other the implementation under test:
categories 1 (framing), 2 (pings), 3 (reserved bits), 4 (opcodes),
5 (fragmentation), 6 (UTF-8), 7 (close), 9 (limits) and 10 (fragment
sizes), after the Autobahn testsuite's, and the messages of 12 and 13
(permessage-deflate) once each script has agreed its parameters. The peer
under test echoes every message with its opcode. Expectations follow
RFC 6455 strictly: a protocol error is a close frame with its code (1002,
1007, 1009), then the end of the TCP connection."""

import os

from ws_conformance_data import (KUHN, PAYLOAD_KINDS, binary_payload, compressible_text, fmt_size,
                                 json_text, text_payload)
from ws_conformance_steps import (Batch, Case, Close, Expect, ExpectClose, ExpectPong, ExpectPongs,
                                  Send, SendMessage, Wait)
from ws_wire import (BINARY, CLOSE, CONT, INVALID_CODES, PING, PONG, RSV1, RSV2, RSV3, TEXT,
                     VALID_CODES, close_payload, encode_head, mask, utf8_check)

RSV_NAMES = {1: "RSV3", 2: "RSV2", 3: "RSV2+RSV3", 4: "RSV1", 5: "RSV1+RSV3", 6: "RSV1+RSV2",
             7: "RSV1+RSV2+RSV3"}


def payload_of(opcode, n, seed=0):
    return (lambda: text_payload(n, seed)) if opcode == TEXT else (lambda: binary_payload(n))


def echo(opcode, n, **send):
    """Steps: a message of n bytes (SendMessage options), and its echo."""
    data = (text_payload(n) if opcode == TEXT else binary_payload(n)) if n <= 1 << 16 else None

    def steps():
        payload = data if data is not None else payload_of(opcode, n)()
        return [SendMessage(opcode, payload, **send), Expect(opcode, payload)]
    return steps


# ---- 1 framing -------------------------------------------------------------------------

def framing(max_message):
    cases = []
    lengths = [0, 125, 126, 127, 128, 65535, 65536] + ([max_message] if max_message > 65536 else [])
    for sub, opcode in ((1, TEXT), (2, BINARY)):
        for i, n in enumerate(lengths, 1):
            cases.append(Case("1.%d.%d" % (sub, i), "%s, %s, one write" % (
                "text" if opcode == TEXT else "binary", fmt_size(n)), echo(opcode, n)))
    chunked = [(TEXT, 128, 1), (BINARY, 127, 1), (TEXT, 126, 1), (BINARY, 125, 1),
               (TEXT, 0, 1), (TEXT, 65536, 997), (BINARY, 65536, 997), (BINARY, 65535, 1500)]
    if max_message > 65536:
        chunked.append((TEXT, max_message, 65536))
    for i, (opcode, n, chunk) in enumerate(chunked, 1):
        how = "byte by byte" if chunk == 1 else "in writes of %d bytes" % chunk
        cases.append(Case("1.3.%d" % i, "%s, %s, %s" % (
            "text" if opcode == TEXT else "binary", fmt_size(n), how),
            echo(opcode, n, chunk=chunk)))
    # RFC 6455 §5.1: a client masks every frame, a server none; the other
    # way round is a protocol error.
    wrong = [("text", TEXT, b"Hello"), ("binary", BINARY, b"\x00\xff"), ("ping", PING, b"ping"),
             ("close", CLOSE, close_payload(1000))]
    for i, (name, opcode, payload) in enumerate(wrong, 1):
        cases.append(Case("1.4.%d" % i, "%s frame with the wrong masking (a client's unmasked, "
                          "a server's masked): 1002" % name,
                          lambda o=opcode, p=payload: [Send(o, p, mask="wrong"),
                                                       ExpectClose(1002)]))
    sizes = [0, 1, 125, 126, 200, 65535, 65536, 3, 70000, 10]
    cases.append(Case("1.5.1", "10 messages of mixed sizes in one write, echoed in order",
                      lambda: pipelined(sizes)))
    return cases


def pipelined(sizes):
    msgs = [(TEXT if i % 2 else BINARY, text_payload(n, i) if i % 2 else binary_payload(n))
            for i, n in enumerate(sizes)]
    return [Batch(*(SendMessage(o, p) for o, p in msgs))] + [Expect(o, p) for o, p in msgs]


# ---- 2 pings ---------------------------------------------------------------------------

def pings(max_message):
    bin8 = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"
    p125 = bytes(range(125))
    tens = [b"payload-%d" % i for i in range(10)]
    rows = [
        ("ping without payload, answered", [Send(PING), ExpectPong(b"")]),
        ("ping with a text payload, answered", [Send(PING, b"Hello, world!"),
                                                ExpectPong(b"Hello, world!")]),
        ("ping with a binary payload, answered", [Send(PING, bin8), ExpectPong(bin8)]),
        ("ping with 125 bytes, answered", [Send(PING, p125), ExpectPong(p125)]),
        ("ping with 126 bytes: 1002", [Send(PING, bytes(126)), ExpectClose(1002)]),
        ("ping with 125 bytes written byte by byte", [Send(PING, p125, chunk=1),
                                                      ExpectPong(p125)]),
        ("unsolicited pong without payload, ignored", [Send(PONG), SendMessage(TEXT, b"after"),
                                                        Expect(TEXT, b"after")]),
        ("unsolicited pong with payload, ignored", [Send(PONG, b"unsolicited"),
                                                     SendMessage(TEXT, b"after"),
                                                     Expect(TEXT, b"after")]),
        ("unsolicited pong, then a ping answered", [Send(PONG, b"unsolicited"),
                                                     Send(PING, b"solicited"),
                                                     ExpectPong(b"solicited")]),
        ("10 pings in one write: pongs in order, the last answered",
         [Batch(*(Send(PING, p) for p in tens)), ExpectPongs(tens)]),
        ("10 pings written byte by byte: pongs in order, the last answered",
         [Batch(*(Send(PING, p) for p in tens), chunk=1), ExpectPongs(tens)]),
        ("pings of every length 0..125 in turn, each answered",
         [step for n in range(126) for step in (Send(PING, bytes(range(n))),
                                                 ExpectPong(bytes(range(n))))]),
    ]
    return [Case("2.%d" % i, desc, steps if callable(steps) else (lambda s=steps: s))
            for i, (desc, steps) in enumerate(rows, 1)]


# ---- 3 reserved bits -------------------------------------------------------------------

def reserved_bits(max_message):
    cases = []
    kinds = [(1, "text", TEXT, b"Hello"), (2, "binary", BINARY, b"\x00\xff\x10"),
             (3, "ping", PING, b"ping"), (4, "close", CLOSE, close_payload(1000))]
    for sub, name, opcode, payload in kinds:
        for rsv in range(1, 8):
            cases.append(Case("3.%d.%d" % (sub, rsv), "%s with %s: 1002" % (name, RSV_NAMES[rsv]),
                              lambda o=opcode, p=payload, r=rsv: [Send(o, p, rsv=r),
                                                                  ExpectClose(1002)]))
    for i, rsv in enumerate((4, 2, 1), 1):
        cases.append(Case("3.5.%d" % i, "unsolicited pong with %s: 1002" % RSV_NAMES[rsv],
                          lambda r=rsv: [Send(PONG, b"x", rsv=r), ExpectClose(1002)]))
    # After a valid message: its echo comes first, then the close; the ping
    # after the bad frame is never answered.
    for rsv in range(1, 8):
        cases.append(Case("3.6.%d" % rsv, "text echoed, then text with %s, then a ping: 1002, "
                          "no pong" % RSV_NAMES[rsv],
                          lambda r=rsv: [SendMessage(TEXT, b"Hello"), Expect(TEXT, b"Hello"),
                                         Batch(Send(TEXT, b"bad", rsv=r), Send(PING, b"p")),
                                         ExpectClose(1002)]))
    for rsv in range(1, 8):
        cases.append(Case("3.7.%d" % rsv, "text, text with %s and a ping in one write: the echo, "
                          "then 1002" % RSV_NAMES[rsv],
                          lambda r=rsv: [Batch(SendMessage(TEXT, b"Hello"),
                                               Send(TEXT, b"bad", rsv=r), Send(PING, b"p")),
                                         Expect(TEXT, b"Hello"), ExpectClose(1002)]))
    for i, rsv in enumerate((4, 2, 1), 1):
        cases.append(Case("3.8.%d" % i, "continuation frame with %s: 1002" % RSV_NAMES[rsv],
                          lambda r=rsv: [Send(TEXT, b"frag", fin=False),
                                         Send(CONT, b"ment", rsv=r), ExpectClose(1002)]))
    return cases


# ---- 4 opcodes ------------------------------------------------------------------------

def opcodes(max_message):
    cases = []
    for sub, ops in ((1, (3, 4, 5, 6, 7)), (2, (11, 12, 13, 14, 15))):
        n = 0
        for op in ops:
            kind = "data" if op < 8 else "control"
            n += 1
            cases.append(Case("4.%d.%d" % (sub, n), "reserved %s opcode %d, no payload: 1002"
                              % (kind, op), lambda o=op: [Send(o), ExpectClose(1002)]))
            n += 1
            cases.append(Case("4.%d.%d" % (sub, n), "reserved %s opcode %d with a payload: 1002"
                              % (kind, op), lambda o=op: [Send(o, b"reserved"),
                                                          ExpectClose(1002)]))
            n += 1
            cases.append(Case("4.%d.%d" % (sub, n), "text echoed, then opcode %d and a ping: "
                              "1002, no pong" % op,
                              lambda o=op: [SendMessage(TEXT, b"Hello"), Expect(TEXT, b"Hello"),
                                            Batch(Send(o, b"reserved"), Send(PING, b"p")),
                                            ExpectClose(1002)]))
    return cases


# ---- 5 fragmentation ----------------------------------------------------------------------

def fragmentation(max_message):
    f1, f2 = b"fragment1", b"fragment2"
    whole = f1 + f2
    five = [b"fragment%d" % i for i in range(1, 6)]
    rows = [
        ("ping in two fragments: 1002", [Send(PING, f1, fin=False), Send(CONT, f2),
                                         ExpectClose(1002)]),
        ("pong in two fragments: 1002", [Send(PONG, f1, fin=False), Send(CONT, f2),
                                         ExpectClose(1002)]),
        ("close in two fragments: 1002", [Send(CLOSE, close_payload(1000), fin=False),
                                          Send(CONT, b"x"), ExpectClose(1002)]),
        ("text in two fragments, one write",
         [Batch(Send(TEXT, f1, fin=False), Send(CONT, f2)), Expect(TEXT, whole)]),
        ("text in two fragments, written apart",
         [Send(TEXT, f1, fin=False), Wait(0.05), Send(CONT, f2), Expect(TEXT, whole)]),
        ("text in two fragments, byte by byte",
         [Batch(Send(TEXT, f1, fin=False), Send(CONT, f2), chunk=1), Expect(TEXT, whole)]),
        ("text in two fragments with a ping between, one write: pong, then the echo",
         [Batch(Send(TEXT, f1, fin=False), Send(PING, b"between"), Send(CONT, f2)),
          ExpectPong(b"between"), Expect(TEXT, whole)]),
        ("text in two fragments with a ping between, byte by byte",
         [Batch(Send(TEXT, f1, fin=False), Send(PING, b"between"), Send(CONT, f2), chunk=1),
          ExpectPong(b"between"), Expect(TEXT, whole)]),
        ("ping between two fragments answered before the second is sent",
         [Send(TEXT, f1, fin=False), Send(PING, b"between"), ExpectPong(b"between"),
          Send(CONT, f2), Expect(TEXT, whole)]),
        ("binary in two fragments", [Batch(Send(BINARY, f1, fin=False), Send(CONT, f2)),
                                     Expect(BINARY, whole)]),
        ("continuation (FIN set) with nothing to continue: 1002",
         [Send(CONT, f1), ExpectClose(1002)]),
        ("continuation (FIN clear) with nothing to continue: 1002",
         [Send(CONT, f1, fin=False), ExpectClose(1002)]),
        ("continuation after a whole message: the echo, then 1002",
         [SendMessage(TEXT, b"Hello"), Expect(TEXT, b"Hello"), Send(CONT, f1),
          ExpectClose(1002)]),
        ("fragmented text, then a continuation with nothing to continue, in one write",
         [Batch(Send(TEXT, f1, fin=False), Send(CONT, f2), Send(CONT, b"stray", fin=False),
                SendMessage(TEXT, b"never")), Expect(TEXT, whole), ExpectClose(1002)]),
        ("text started inside a fragmented text: 1002",
         [Send(TEXT, f1, fin=False), Send(TEXT, f2), ExpectClose(1002)]),
        ("binary started inside a fragmented text: 1002",
         [Send(TEXT, f1, fin=False), Send(BINARY, f2), ExpectClose(1002)]),
        ("text (FIN clear) started inside a fragmented binary: 1002",
         [Send(BINARY, f1, fin=False), Send(TEXT, f2, fin=False), ExpectClose(1002)]),
        ("text in five fragments, a ping between each two, each pong awaited",
         [step for i, frag in enumerate(five[:4]) for step in
          (Send(TEXT if i == 0 else CONT, frag, fin=False), Send(PING, b"ping%d" % i),
           ExpectPong(b"ping%d" % i))] + [Send(CONT, five[4]), Expect(TEXT, b"".join(five))]),
        ("text in five fragments, a ping between each two, one write: pongs (the last one "
         "at least), then the echo",
         [Batch(*(step for i, frag in enumerate(five[:4]) for step in
                  (Send(TEXT if i == 0 else CONT, frag, fin=False),
                   Send(PING, b"ping%d" % i))), Send(CONT, five[4])),
          ExpectPongs([b"ping%d" % i for i in range(4)]), Expect(TEXT, b"".join(five))]),
        ("text of 64 bytes in 64 fragments of one byte",
         [SendMessage(TEXT, text_payload(64), frag=1), Expect(TEXT, text_payload(64))]),
        ("binary of 16000 bytes in 1000 fragments",
         lambda: (lambda p: [SendMessage(BINARY, p, frag=16), Expect(BINARY, p)])(
             binary_payload(16000))),
        ("text with empty first and last fragments",
         [Batch(Send(TEXT, b"", fin=False), Send(CONT, b"middle", fin=False), Send(CONT, b"")),
          Expect(TEXT, b"middle")]),
        ("text of three empty fragments",
         [Batch(Send(TEXT, b"", fin=False), Send(CONT, b"", fin=False), Send(CONT, b"")),
          Expect(TEXT, b"")]),
        ("ping of 125 bytes between fragments",
         [Batch(Send(BINARY, f1, fin=False), Send(PING, bytes(125)), Send(CONT, f2)),
          ExpectPong(bytes(125)), Expect(BINARY, whole)]),
        ("a fragmented message, then a whole one, then a fragmented one",
         [Batch(Send(TEXT, f1, fin=False), Send(CONT, f2), SendMessage(BINARY, b"whole"),
                Send(BINARY, f2, fin=False), Send(CONT, f1)),
          Expect(TEXT, whole), Expect(BINARY, b"whole"), Expect(BINARY, f2 + f1)]),
    ]
    return [Case("5.%d" % i, desc, steps if callable(steps) else (lambda s=steps: s))
            for i, (desc, steps) in enumerate(rows, 1)]


# ---- 6 UTF-8 ----------------------------------------------------------------------------

def text_expect(data):
    """The outcome of data as a text message: its echo or 1007."""
    bad, complete = utf8_check(data)
    return [Expect(TEXT, data)] if bad is None and complete else [ExpectClose(1007)]


def frames_of(data, cuts):
    """data as a text message cut at the offsets in cuts."""
    points = [0] + list(cuts) + [len(data)]
    pieces = [data[a:b] for a, b in zip(points, points[1:])]
    return [Send(TEXT if i == 0 else CONT, p, fin=i == len(pieces) - 1)
            for i, p in enumerate(pieces)]


def utf8(max_message):
    cases = []

    def add(cid, desc, steps):
        cases.append(Case(cid, desc, lambda: steps))
    add("6.1.1", "empty text", [SendMessage(TEXT, b""), Expect(TEXT, b"")])
    add("6.1.2", "empty text in three empty fragments",
        [Batch(*frames_of(b"", [0, 0])), Expect(TEXT, b"")])
    add("6.1.3", "text in three fragments, the outer two empty",
        [Batch(*frames_of(b"middle", [0, 6])), Expect(TEXT, b"middle")])
    hello = "Hello-µ@ßöäüàá-UTF-8!!".encode()
    add("6.2.1", "valid UTF-8, one frame", [SendMessage(TEXT, hello), Expect(TEXT, hello)])
    add("6.2.2", "valid UTF-8 in fragments cut between code points",
        [Batch(*frames_of(hello, [6, 8, 10, 13])), Expect(TEXT, hello)])
    add("6.2.3", "valid UTF-8 in fragments of one byte (cut inside code points)",
        [SendMessage(TEXT, hello, frag=1), Expect(TEXT, hello)])
    add("6.2.4", "valid UTF-8, one frame written byte by byte",
        [SendMessage(TEXT, hello, chunk=1), Expect(TEXT, hello)])
    bad = "κόσμε".encode() + b"\xed\xa0\x80" + b"edited"
    add("6.3.1", "invalid UTF-8 (a surrogate), one frame: 1007",
        [SendMessage(TEXT, bad), ExpectClose(1007)])
    add("6.3.2", "invalid UTF-8 (a surrogate) in fragments of one byte: 1007",
        [SendMessage(TEXT, bad, frag=1), ExpectClose(1007)])
    cases.extend(fail_fast())
    kosme = "κόσμε".encode()
    add("6.5.1", "κόσμε, one frame", [SendMessage(TEXT, kosme), Expect(TEXT, kosme)])
    add("6.5.2", "κόσμε in fragments of one byte",
        [SendMessage(TEXT, kosme, frag=1), Expect(TEXT, kosme)])
    add("6.5.3", "κόσμε in fragments cut between code points",
        [Batch(*frames_of(kosme, [2, 5, 7, 9])), Expect(TEXT, kosme)])
    for n in range(1, len(kosme) + 1):
        part = kosme[:n]
        outcome = "echoed" if utf8_check(part) == (None, True) else "1007"
        add("6.6.%d" % n, "the first %d bytes of κόσμε: %s" % (n, outcome),
            [SendMessage(TEXT, part)] + text_expect(part))
    for sub, (title, vectors) in enumerate(KUHN, 7):
        for i, (desc, data) in enumerate(vectors, 1):
            outcome = "echoed" if utf8_check(data) == (None, True) else "1007"
            add("6.%d.%d" % (sub, i), "%s: %s: %s" % (title, desc, outcome),
                [SendMessage(TEXT, data)] + text_expect(data))
    sub = 7 + len(KUHN)
    # Fail fast: the first frame holds a byte no valid text can have there;
    # the close must come without the rest of the message.
    n = 0
    for title, vectors in KUHN:
        for desc, data in vectors:
            msg = b"ok " + data + b" end"
            bad_at, _ = utf8_check(msg)
            if bad_at is None:
                continue
            n += 1
            add("6.%d.%d" % (sub, n), "%s: %s, in a first fragment that ends at the bad byte: "
                "1007 before the rest" % (title, desc),
                [Send(TEXT, msg[:bad_at + 1], fin=False), ExpectClose(1007)])
            break
    # Every code point length cut at every inner position.
    n = 0
    for cp in ("¢", "€", "𐍈"):
        data = ("<" + cp + ">").encode()
        for cut in range(2, len(cp.encode()) + 1):
            n += 1
            add("6.%d.%d" % (sub + 1, n), "U+%04X cut after its byte %d, across two fragments"
                % (ord(cp), cut - 1), [Batch(*frames_of(data, [cut])), Expect(TEXT, data)])
    return cases


def fail_fast():
    """6.4: the peer fails at the bad byte (1007) without the rest of the
    message, and even without the rest of the frame."""
    kosme = "κόσμε".encode()
    bad = b"\xf4\x90\x80\x80"  # above U+10FFFF: fails at its second byte
    rows = [
        ("fragments 'κόσμε' and U+110000 (FIN clear): 1007 before the third",
         [Send(TEXT, kosme, fin=False), Send(CONT, bad, fin=False), ExpectClose(1007)]),
        ("fragments 'κόσμε\\xf4' and '\\x90\\x80\\x80' (FIN clear): 1007 before the third",
         [Send(TEXT, kosme + bad[:1], fin=False), Send(CONT, bad[1:], fin=False),
          ExpectClose(1007)]),
        ("a whole frame whose bytes stop after the bad one: 1007 before the frame ends",
         [Send(TEXT, kosme + bad + b"edited", upto=len(kosme) + 2), ExpectClose(1007)]),
        ("a first fragment whose bytes stop after the bad one: 1007 before the frame ends",
         [Send(TEXT, kosme + bad + b"edited", fin=False, upto=len(kosme) + 2),
          ExpectClose(1007)]),
    ]
    return [Case("6.4.%d" % i, desc, lambda s=steps: s) for i, (desc, steps) in enumerate(rows, 1)]


# ---- 7 close -----------------------------------------------------------------------------

def closing(max_message):
    cases = []

    def add(cid, desc, steps):
        cases.append(Case(cid, desc, lambda: steps))
    add("7.1.1", "text echoed, then close 1000", [SendMessage(TEXT, b"Hello"),
                                                  Expect(TEXT, b"Hello"), Close(1000)])
    add("7.1.2", "close 1000 sent twice: one close back",
        [Batch(Send(CLOSE, close_payload(1000)), Send(CLOSE, close_payload(1000))),
         ExpectClose(1000, error=False)])
    add("7.1.3", "close 1000, then a ping: no pong",
        [Batch(Send(CLOSE, close_payload(1000)), Send(PING, b"late")),
         ExpectClose(1000, error=False)])
    add("7.1.4", "close 1000, then text: no echo",
        [Batch(Send(CLOSE, close_payload(1000)), SendMessage(TEXT, b"late")),
         ExpectClose(1000, error=False)])
    add("7.1.5", "a first fragment, close 1000, the last fragment: no echo",
        [Batch(Send(TEXT, b"frag", fin=False), Send(CLOSE, close_payload(1000)),
               Send(CONT, b"ment")), ExpectClose(1000, error=False)])
    add("7.1.6", "a ping, then close 1000, in one write: the pong, then the close",
        [Batch(Send(PING, b"first"), Send(CLOSE, close_payload(1000))), ExpectPong(b"first"),
         ExpectClose(1000, error=False)])
    add("7.1.7", "close 1000 written byte by byte",
        [Send(CLOSE, close_payload(1000, b"bye"), chunk=1), ExpectClose(1000, error=False)])
    reason123 = text_payload(123)
    rows = [
        ("close without a payload: close without a code or 1000", [Close(None)]),
        ("close with a 1-byte payload: 1002", [Send(CLOSE, b"\x03"), ExpectClose(1002)]),
        ("close 1000 without a reason", [Close(1000)]),
        ("close 1000 with a reason", [Close(1000, b"Hello World!")]),
        ("close 1000 with a 123-byte reason", [Close(1000, reason123)]),
        ("close 1000 with a 124-byte reason (payload 126): 1002",
         [Send(CLOSE, close_payload(1000, reason123 + b"x")), ExpectClose(1002)]),
        ("close 1000 with a reason not UTF-8: 1007",
         [Send(CLOSE, close_payload(1000, b"bad \xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                                          b"\xed\xa0\x80 reason")), ExpectClose(1007)]),
        ("close 1000 with a reason cut inside a code point: 1007",
         [Send(CLOSE, close_payload(1000, "κόσμε".encode()[:3])), ExpectClose(1007)]),
        ("close 1000 with a UTF-8 reason", [Close(1000, "κόσμε".encode())]),
    ]
    for i, (desc, steps) in enumerate(rows, 1):
        add("7.2.%d" % i, desc, steps)
    for i, code in enumerate(VALID_CODES, 1):
        add("7.3.%d" % i, "close %d: echoed" % code, [Close(code)])
    for i, code in enumerate(INVALID_CODES, 1):
        add("7.4.%d" % i, "close %d (not valid on the wire): 1002" % code,
            [Send(CLOSE, close_payload(code)), ExpectClose(1002)])
    return cases


# ---- 9 limits --------------------------------------------------------------------------------

def limits(max_message):
    cases = []
    m = max_message
    sizes = sorted({s for s in (1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24) if s < m} | {m})
    for sub, opcode in ((1, TEXT), (2, BINARY)):
        for i, n in enumerate(sizes, 1):
            cases.append(Case("9.%d.%d" % (sub, i), "%s of %s in one frame" % (
                "text" if opcode == TEXT else "binary", fmt_size(n)), echo(opcode, n)))
    frags = [f for f in (64, 256, 1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22)
             if f < m]
    for sub, opcode in ((3, TEXT), (4, BINARY)):
        for i, f in enumerate(frags, 1):
            cases.append(Case("9.%d.%d" % (sub, i), "%s of %s in fragments of %s" % (
                "text" if opcode == TEXT else "binary", fmt_size(m), fmt_size(f)),
                echo(opcode, m, frag=f)))
    n = min(m, 1 << 20)
    for i, chunk in enumerate((64, 256, 1024, 4096, 16384, 65536), 1):
        cases.append(Case("9.5.%d" % i, "binary of %s in one frame, written in pieces of %s"
                          % (fmt_size(n), fmt_size(chunk)), echo(BINARY, n, chunk=chunk)))
    over = [
        ("text of %s + 1 in one frame: 1009" % fmt_size(m),
         lambda: [SendMessage(TEXT, text_payload(m + 1)), ExpectClose(1009)]),
        ("binary of %s + 1 in one frame: 1009" % fmt_size(m),
         lambda: [SendMessage(BINARY, binary_payload(m + 1)), ExpectClose(1009)]),
        ("binary of %s + 1 in fragments of 64 KiB: 1009" % fmt_size(m),
         lambda: [SendMessage(BINARY, binary_payload(m + 1), frag=1 << 16), ExpectClose(1009)]),
        ("text of %s and a continuation of 1 byte: 1009" % fmt_size(m),
         lambda: [Send(TEXT, text_payload(m), fin=False), Send(CONT, b"x"), ExpectClose(1009)]),
        ("a frame announcing 2^62 bytes, none sent: 1009 at once",
         lambda: [HugeHead(), ExpectClose(1009)]),
    ]
    for i, (desc, build) in enumerate(over, 1):
        cases.append(Case("9.6.%d" % i, desc, build))
    small = [(TEXT, text_payload(16, i)) for i in range(1000)]
    cases.append(Case("9.7.1", "1000 text messages of 16 bytes in one write",
                      lambda: [Batch(*(SendMessage(o, p) for o, p in small))]
                      + [Expect(o, p) for o, p in small]))
    cases.append(Case("9.7.2", "100 binary messages of 4 KiB in one write",
                      lambda: (lambda msgs: [Batch(*(SendMessage(BINARY, p) for p in msgs))]
                               + [Expect(BINARY, p) for p in msgs])(
                                   [binary_payload(4096) for _ in range(100)])))
    return cases


class HugeHead:
    """The head of a binary frame of 2^62 bytes and the first 16 of them."""

    def run(self, s):
        key = os.urandom(4) if s.client else None
        head = encode_head(BINARY, 1 << 62, True, 0, key)
        body = bytes(16)
        s.write(head + (mask(body, key) if key else body))
        s.mid_frame = True


# ---- 10 fragment sizes --------------------------------------------------------------------------

def fragment_sizes(max_message):
    cases = []
    sizes = (1, 2, 3, 7, 64, 125, 126, 127, 1300, 4096, 65535, 65536)
    for sub, opcode in ((1, TEXT), (2, BINARY)):
        for i, f in enumerate(sizes, 1):
            cases.append(Case("10.%d.%d" % (sub, i), "%s of 64 KiB in fragments of %s" % (
                "text" if opcode == TEXT else "binary", fmt_size(f)),
                echo(opcode, 1 << 16, frag=f)))
    return cases


# ---- 12 permessage-deflate messages ----------------------------------------------------------

SIZES = (16, 64, 256, 1024, 4096, 16384, 65536, 131072)
HELLO = b"Hello"


class SendRaw:
    """A compressed message given as its deflate bytes (RFC 7692's
    examples): frames of (payload, fin), RSV1 on the first."""

    def __init__(self, *frames, opcode=TEXT):
        self.frames, self.opcode = frames, opcode

    def run(self, s):
        out = b""
        for i, (payload, fin) in enumerate(self.frames):
            out += s.frame_bytes(self.opcode if i == 0 else CONT, payload, fin,
                                 RSV1 if i == 0 else 0)
        s.write(out)


class IfContextKept:
    """Steps that need this side's compression context kept across
    messages (its *_no_context_takeover not agreed), and what to run
    else."""

    def __init__(self, steps, other):
        self.steps, self.other = steps, other

    def run(self, s):
        for step in (self.other if s.pmd.send_reset else self.steps):
            step.run(s)


def bomb(n, frag=None):
    """A message of n zero bytes, deflated (a few KiB), then 1009."""
    return lambda: [SendMessage(BINARY, bytes(n), frag=frag, compress=True), ExpectClose(1009)]


def messages_of(kind, size, count=5):
    opcode, make = PAYLOAD_KINDS[kind]

    def steps():
        out = []
        for seed in range(count):
            data = make(size, seed)
            out += [SendMessage(opcode, data, compress=True), Expect(opcode, data)]
        return out
    return steps


def deflate_message_cases(max_message):
    """12.1-12.6, on a connection where permessage-deflate was agreed
    (each script adds how: its offer, or its response to the peer's)."""
    cases = []
    for sub, kind in enumerate(PAYLOAD_KINDS, 1):
        for i, size in enumerate(SIZES, 1):
            cases.append(Case("12.%d.%d" % (sub, i), "5 %s messages of %s, compressed" % (
                kind, fmt_size(size)), messages_of(kind, size)))
    text = compressible_text(4096, 7)
    rnd = binary_payload(65536)
    mixed = [
        ("compressed, plain and compressed again on one connection",
         [SendMessage(TEXT, text, compress=True), Expect(TEXT, text),
          SendMessage(TEXT, text), Expect(TEXT, text),
          SendMessage(TEXT, text, compress=True), Expect(TEXT, text)]),
        ("a compressed message in three fragments, RSV1 on the first",
         [SendMessage(TEXT, compressible_text(30000, 3), frag=4000, compress=True),
          Expect(TEXT, compressible_text(30000, 3))]),
        ("random 64 KiB compressed, in fragments of 1000 bytes",
         [SendMessage(BINARY, rnd, frag=1000, compress=True), Expect(BINARY, rnd)]),
        ("an empty message, compressed", [SendMessage(TEXT, b"", compress=True),
                                          Expect(TEXT, b"")]),
        ("RSV1 with an empty payload: an empty message", [SendRaw((b"", True)),
                                                          Expect(TEXT, b"")]),
        ("RFC 7692 §7.2.3.1: 'Hello' compressed",
         [SendRaw((bytes.fromhex("f248cdc9c90700"), True)), Expect(TEXT, HELLO)]),
        ("RFC 7692 §7.2.3.1: 'Hello' compressed, in two fragments",
         [SendRaw((bytes.fromhex("f248cd"), False), (bytes.fromhex("c9c90700"), True)),
          Expect(TEXT, HELLO)]),
        ("RFC 7692 §7.2.3.2: two 'Hello's, the second using the first's window",
         [SendRaw((bytes.fromhex("f248cdc9c90700"), True)), Expect(TEXT, HELLO),
          IfContextKept([SendRaw((bytes.fromhex("f200110000"), True))],
                           [SendRaw((bytes.fromhex("f248cdc9c90700"), True))]),
          Expect(TEXT, HELLO)]),
        ("RFC 7692 §7.2.3.3: 'Hello' in a stored block",
         [SendRaw((bytes.fromhex("000500faff48656c6c6f00"), True)), Expect(TEXT, HELLO)]),
        ("RFC 7692 §7.2.3.4: 'Hello' in a block with BFINAL set, then another message",
         [SendRaw((bytes.fromhex("f348cdc9c9070000"), True)), Expect(TEXT, HELLO),
          SendMessage(TEXT, b"after the final block", compress=True),
          Expect(TEXT, b"after the final block")]),
        ("RFC 7692 §7.2.3.5: 'Hello' in two deflate blocks",
         [SendRaw((bytes.fromhex("f24805000000ffffcac9c90700"), True)), Expect(TEXT, HELLO)]),
        ("100 compressed messages of 16 bytes in one write",
         [Batch(*(SendMessage(TEXT, text_payload(16, i), compress=True) for i in range(100)))]
         + [Expect(TEXT, text_payload(16, i)) for i in range(100)]),
    ]
    for i, (desc, steps) in enumerate(mixed, 1):
        cases.append(Case("12.5.%d" % i, desc, lambda s=steps: s))
    m = max_message
    errors = [
        ("RSV1 on a continuation frame: 1002",
         [Send(TEXT, b"frag", fin=False), Send(CONT, b"ment", rsv=RSV1), ExpectClose(1002)]),
        ("RSV1 on a ping: 1002", [Send(PING, b"p", rsv=RSV1), ExpectClose(1002)]),
        ("RSV1 on a pong: 1002", [Send(PONG, b"p", rsv=RSV1), ExpectClose(1002)]),
        ("RSV1 on a close: 1002", [Send(CLOSE, b"\x03\xe8", rsv=RSV1), ExpectClose(1002)]),
        ("RSV2 on a text: 1002", [Send(TEXT, b"x", rsv=RSV2), ExpectClose(1002)]),
        ("RSV3 on a text: 1002", [Send(TEXT, b"x", rsv=RSV3), ExpectClose(1002)]),
        ("%s + 1 zero bytes deflated: 1009" % fmt_size(m), bomb(m + 1)),
        ("8 x %s zero bytes deflated: 1009" % fmt_size(m), bomb(8 * m)),
        ("%s + 1 zero bytes deflated, in fragments of 64 bytes: 1009" % fmt_size(m),
         bomb(m + 1, frag=64)),
        ("data that does not inflate: 1002 or 1007 (RFC 7692 names no code)",
         [SendRaw((b"\xff\xff\xff\xff", True)), ExpectClose(1002, 1007)]),
        ("compressed text that is not UTF-8: 1007",
         [SendMessage(TEXT, b"ok \xed\xa0\x80 no", compress=True), ExpectClose(1007)]),
    ]
    for i, (desc, steps) in enumerate(errors, 1):
        cases.append(Case("12.6.%d" % i, desc, steps if callable(steps) else
                          (lambda s=steps: s)))
    return cases


def parameter_steps():
    """13: what runs on each combination of parameters."""
    text = compressible_text(4096, 1)
    big = compressible_text(65536, 2)
    rnd = binary_payload(1024)
    js = json_text(300, 3)
    return [SendMessage(TEXT, text, compress=True), Expect(TEXT, text),
            SendMessage(TEXT, text, compress=True), Expect(TEXT, text),
            SendMessage(BINARY, rnd, compress=True), Expect(BINARY, rnd),
            SendMessage(TEXT, js), Expect(TEXT, js),
            SendMessage(TEXT, big, frag=16384, compress=True), Expect(TEXT, big),
            SendMessage(TEXT, js, compress=True), Expect(TEXT, js)]


def common_cases(max_message):
    out = []
    for table in (framing, pings, reserved_bits, opcodes, fragmentation, utf8, closing, limits,
                  fragment_sizes):
        out.extend(table(max_message))
    return out
