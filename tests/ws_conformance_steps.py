"""The step vocabulary, cases and their report for keel's WebSocket
conformance scripts: tests/ws_conformance.py (a raw client driving a server)
and tests/ws_conformance_client.py (a raw server driving a client).

Both sides run the same tables (ws_conformance_tables.py) for categories
1-7, 9 and 10 and the messages of 12 and 13 (frames masked when the script
is the client, unmasked when it is the server); the opening handshake (0)
and the permessage-deflate negotiation differ by side and live in each
script.

A case is a list of steps run on one connection:
  Send / SendMessage / Batch   write frames (in one write, in chunks, byte
                               by byte, or a frame left unfinished)
  Expect / ExpectPong(s)       the peer's next frames must be these
  ExpectClose                  the peer's next frame must be a close with
                               one of the codes, then the TCP connection
                               must end (the server's side first)
  Close                        start the close handshake; the peer must
                               answer with the same code
A case that ends without a close step is closed with 1000. A step that
finds something else raises CaseFail(expected, got)."""

import struct
import sys

from ws_conformance_lib import CaseFail, clip
from ws_wire import CLOSE, CONT, PONG, RSV1, close_payload, op_name, utf8_valid

CATEGORY_NAMES = {
    "0": "opening handshake", "1": "framing", "2": "pings and pongs", "3": "reserved bits",
    "4": "opcodes", "5": "fragmentation", "6": "UTF-8", "7": "close", "9": "limits",
    "10": "fragment sizes", "12": "permessage-deflate messages",
    "13": "permessage-deflate parameters",
}

# ---- Steps -------------------------------------------------------------------------------

def resolve(payload):
    return payload() if callable(payload) else payload


class Send:
    """One frame. chunk/pause: written in pieces; mask="wrong": masked by
    a server, unmasked by a client (RFC 6455 §5.1 the other way round);
    compress: deflate the payload and set RSV1; upto: write only the
    first upto bytes of the payload and leave the frame unfinished."""

    def __init__(self, opcode, payload=b"", fin=True, rsv=0, chunk=None, pause=0.0, mask=None,
                 compress=False, upto=None):
        self.opcode, self.payload, self.fin, self.rsv = opcode, payload, fin, rsv
        self.chunk, self.pause, self.mask, self.compress, self.upto = chunk, pause, mask, \
            compress, upto

    def encode(self, s):
        payload, rsv = resolve(self.payload), self.rsv
        if self.compress:
            packed = s.pmd.compress(payload) if s.pmd else None
            if packed is not None:
                payload, rsv = packed, rsv | RSV1
        masked = (not s.client) if self.mask == "wrong" else None
        data = s.frame_bytes(self.opcode, payload, self.fin, rsv, masked)
        if self.upto is not None:
            data = data[:len(data) - len(payload) + self.upto]
        return data

    def run(self, s):
        data = self.encode(s)
        if self.opcode == CLOSE:
            s.close_sent = True
        s.write(data, self.chunk, self.pause)
        if self.upto is not None:
            s.mid_frame = True


class SendMessage:
    """A message in fragments of frag bytes (one frame without), all in
    one write unless chunk; compress: the message is deflated whole, then
    split, RSV1 on its first frame only."""

    def __init__(self, opcode, payload, frag=None, compress=False, chunk=None, pause=0.0):
        self.opcode, self.payload, self.frag, self.compress = opcode, payload, frag, compress
        self.chunk, self.pause = chunk, pause

    def encode(self, s):
        payload, rsv = resolve(self.payload), 0
        if self.compress:
            packed = s.pmd.compress(payload) if s.pmd else None
            if packed is not None:
                payload, rsv = packed, RSV1
        if not self.frag or len(payload) <= self.frag:
            return s.frame_bytes(self.opcode, payload, True, rsv)
        frames, n = [], len(payload)
        for off in range(0, n, self.frag):
            first, last = off == 0, off + self.frag >= n
            frames.append(s.frame_bytes(self.opcode if first else CONT,
                                        payload[off:off + self.frag], last, rsv if first else 0))
        s.frames_written += len(frames)
        return b"".join(frames)

    def run(self, s):
        s.write(self.encode(s), self.chunk, self.pause)


class Batch:
    """Several Send/SendMessage steps in one write (or in chunks)."""

    def __init__(self, *steps, chunk=None, pause=0.0):
        self.steps, self.chunk, self.pause = steps, chunk, pause

    def run(self, s):
        data = b"".join(step.encode(s) for step in self.steps)
        if any(isinstance(step, Send) and step.opcode == CLOSE for step in self.steps):
            s.close_sent = True
        s.write(data, self.chunk, self.pause)


class Wait:
    def __init__(self, seconds):
        self.seconds = seconds

    def run(self, s):
        s.wait(self.seconds)


class Expect:
    """The peer's next message: opcode and payload (its echo)."""

    def __init__(self, opcode, payload):
        self.opcode, self.payload = opcode, payload

    def run(self, s):
        payload = resolve(self.payload)
        expected = "the echo (%s message of %d bytes)" % (op_name(self.opcode), len(payload))
        opcode, data = s.read_message(expected, len(payload))
        if opcode != self.opcode:
            raise CaseFail(expected, "a %s message of %d bytes" % (op_name(opcode), len(data)))
        if data != payload:
            at = next((i for i, (a, b) in enumerate(zip(data, payload)) if a != b),
                      min(len(data), len(payload)))
            raise CaseFail(expected, "%d bytes differing from byte %d: %s" % (
                len(data), at, clip(data[at:], 16)))


class ExpectPong:
    def __init__(self, payload):
        self.payload = payload

    def run(self, s):
        expected = "a pong of %d bytes %s" % (len(self.payload), clip(self.payload, 16))
        frame = s.next_frame(expected, s.deadline())
        if frame is None:
            raise CaseFail(expected, "%s without a close frame" % s.ended_text())
        if frame.opcode != PONG or frame.payload != self.payload or not frame.fin or frame.rsv:
            raise CaseFail(expected, str(frame))


class ExpectPongs:
    """Pongs for a run of pings sent together: the peer may answer only
    the latest of those it saw while busy, so the pongs must be a
    subsequence of the pings' payloads, in order, ending with the last."""

    def __init__(self, payloads):
        self.payloads = payloads

    def run(self, s):
        expected = "pongs for the %d pings, the last one included" % len(self.payloads)
        at, deadline = 0, s.deadline()
        while True:
            frame = s.next_frame(expected, deadline)
            if frame is None:
                raise CaseFail(expected, "%s without a close frame" % s.ended_text())
            if frame.opcode != PONG or frame.payload not in self.payloads[at:]:
                raise CaseFail(expected, "%s after %d pongs" % (frame, at))
            at = self.payloads.index(frame.payload, at) + 1
            if at == len(self.payloads):
                return


class ExpectClose:
    """The peer's next frame is a close with one of codes (None: no code),
    then TCP ends. error: it fails the connection, and --lenient accepts a
    TCP close without the close frame."""

    def __init__(self, *codes, error=True):
        self.codes, self.error = codes, error

    def expected(self):
        names = ["close %d" % c if c is not None else "close without a code" for c in self.codes]
        return " or ".join(names)

    def run(self, s):
        expected = self.expected()
        frame = s.next_frame(expected, s.deadline())
        if frame is None:
            if self.error and s.ctx.lenient:
                s.lenient_close = True
                s.closed = True
                s.shutdown()
                return
            raise CaseFail(expected, "%s without a close frame" % s.ended_text())
        if frame.opcode != CLOSE:
            raise CaseFail(expected, str(frame))
        payload = frame.payload
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        if len(payload) == 1 or code not in self.codes:
            raise CaseFail(expected, str(frame))
        if code is not None and not utf8_valid(payload[2:]):
            raise CaseFail(expected, "%s, its reason not UTF-8" % frame)
        s.final_code = 1005 if code is None else code
        if not s.close_sent and not s.mid_frame:
            s.write(s.frame_bytes(CLOSE, close_payload(code)))
            s.close_sent = True
        s.finish()


class Close:
    """Starts the close handshake with code (None: an empty close); the
    peer must answer with the same code (an empty close: none or 1000)."""

    def __init__(self, code=1000, reason=b""):
        self.code, self.reason = code, reason

    def run(self, s):
        s.write(s.frame_bytes(CLOSE, close_payload(self.code, self.reason)))
        s.close_sent = True
        codes = (None, 1000) if self.code is None else (self.code,)
        ExpectClose(*codes, error=False).run(s)
        s.final_code = 1005 if self.code is None else self.code


def run_steps(s, steps):
    """Runs a case's steps on s; closes with 1000 if they did not close."""
    for step in steps:
        step.run(s)
    if not s.closed:
        Close(1000).run(s)


# ---- Cases and their report -----------------------------------------------------------------

class Case:
    """id "cat.sub.n", a description, and build(): the steps (built when
    the case runs, so that --list makes no payloads). opts: what the
    script's connection set-up reads (deflate offers, handshakes)."""

    def __init__(self, cid, desc, build=None, **opts):
        self.id, self.desc, self.build, self.opts = cid, desc, build, opts

    @property
    def category(self):
        return self.id.split(".")[0]


def selected(cases, categories, only):
    out = []
    for case in cases:
        if categories and case.category not in categories:
            continue
        if only and not any(case.id == o or case.id.startswith(o + ".") for o in only):
            continue
        out.append(case)
    return out


class Report:
    def __init__(self, out=sys.stdout):
        self.out = out
        self.counts = {}  # category -> [passed, failed, skipped]

    def result(self, case, status, detail=""):
        line = "%s %s %s" % (status, case.id, case.desc)
        if detail:
            line += " (%s)" % detail
        print(line, file=self.out, flush=True)
        row = self.counts.setdefault(case.category, [0, 0, 0])
        row[("PASS", "FAIL", "SKIP").index(status)] += 1

    def summary(self):
        total = [0, 0, 0]
        print("", file=self.out)
        for cat in sorted(self.counts, key=int):
            row = self.counts[cat]
            total = [a + b for a, b in zip(total, row)]
            text = "category %s (%s): %d passed, %d failed" % (
                cat, CATEGORY_NAMES.get(cat, "?"), row[0], row[1])
            print(text + (", %d skipped" % row[2] if row[2] else ""), file=self.out)
        last = "%d passed, %d failed" % (total[0], total[1])
        print(last + (", %d skipped" % total[2] if total[2] else ""), file=self.out, flush=True)
        return total[1] == 0


def list_cases(cases):
    for case in cases:
        print("%-10s %s" % (case.id, case.desc))
    print("%d cases" % len(cases))


def add_common_arguments(parser):
    parser.add_argument("--category", action="append", default=[],
                        help="run only these categories (repeatable, comma-separated)")
    parser.add_argument("--case", action="append", default=[],
                        help="run only this case or this group of cases (e.g. 6.4), repeatable")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="seconds to wait for each answer (default 2)")
    parser.add_argument("--max-message", type=int, default=1 << 20,
                        help="the peer's message limit, in bytes (default 1 MiB)")
    parser.add_argument("--lenient", action="store_true",
                        help="accept a TCP close without a close frame for a protocol error")


def split_list(values):
    return [v.strip() for item in values for v in item.split(",") if v.strip()]
