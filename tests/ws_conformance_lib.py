"""A WebSocket connection as raw bytes for keel's conformance scripts
(tests/ws_conformance.py, a raw client driving a server, and
tests/ws_conformance_client.py, a raw server driving a client): Session
reads frames (checking the peer's masking), reassembles and inflates
messages, writes while reading so that neither side stalls, and ends the
connection as RFC 6455 says (the server's side of TCP first). The steps
that use it are in ws_conformance_steps.py.

Only socket, struct, select, os.urandom and zlib speak the protocol here
(with ws_wire.py): no WebSocket library is involved in the driver."""

import errno
import os
import select
import socket
import struct
import time

from ws_wire import (BINARY, CLOSE, CONT, PING, PONG, RSV1, RSV2, RSV3, TEXT, encode_frame, mask,
                     op_name)

RATE = 20e6         # bytes per second a peer is granted beyond the timeout
FRAME_TIME = 50e-6  # and seconds per frame

def clip(data, n=40):
    text = repr(bytes(data[:n]))
    return text + ("..." if len(data) > n else "")


# ---- HTTP heads -------------------------------------------------------------------

MAX_HEAD = 65536


def head_bytes(start, base, fields=None):
    """A request or response head: the start line, then the base fields
    [(name, value)] where fields (a dict) may replace a value (None drops
    the field, a list repeats it), then fields' other entries."""
    fields = dict(fields or {})
    items = [(name, fields.pop(name, value)) for name, value in base] + list(fields.items())
    lines = [start]
    for name, value in items:
        for v in (value if isinstance(value, list) else [value]):
            if v is not None:
                lines.append("%s: %s" % (name, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Head:
    """A parsed head: its start line, fields [(name, value)], and the bytes
    read past it."""

    def __init__(self, start, fields, rest):
        self.start, self.fields, self.rest = start, fields, rest

    def values(self, name):
        return [v for n, v in self.fields if n.lower() == name.lower()]

    def value(self, name):
        vals = self.values(name)
        return ", ".join(vals) if vals else None

    def tokens(self, name):
        return [t.strip().lower() for v in self.values(name) for t in v.split(",") if t.strip()]


def read_head(sock, timeout, expected):
    """Reads an HTTP head from sock within timeout: Head, or CaseFail."""
    buf, deadline = b"", time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CaseFail(expected, "no complete head within %.1f s (%s)" % (timeout, clip(buf)))
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError as exc:
            raise CaseFail(expected, "%s (%s)" % (exc, clip(buf))) from None
        if not data:
            raise CaseFail(expected, "the connection closed after %s" % clip(buf))
        buf += data
        if len(buf) > MAX_HEAD and b"\r\n\r\n" not in buf:
            raise CaseFail(expected, "a head over %d bytes" % MAX_HEAD)
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        if ":" not in line:
            raise CaseFail(expected, "the line %r in its head" % line)
        name, value = line.split(":", 1)
        fields.append((name.strip(), value.strip()))
    return Head(lines[0], fields, rest)


# ---- The connection --------------------------------------------------------------------

class CaseFail(Exception):
    def __init__(self, expected, got):
        super().__init__("expected %s, got %s" % (expected, got))
        self.expected, self.got = expected, got


class Frame:
    __slots__ = ("fin", "rsv", "opcode", "key", "payload")

    def __init__(self, fin, rsv, opcode, key, payload):
        self.fin, self.rsv, self.opcode, self.key, self.payload = fin, rsv, opcode, key, payload

    def __str__(self):
        if self.opcode == CLOSE:
            text = describe_close(self.payload)
        else:
            text = "%s frame of %d bytes" % (op_name(self.opcode), len(self.payload))
            if self.opcode in (TEXT, BINARY, CONT, PING, PONG) and self.payload:
                text += " %s" % clip(self.payload, 24)
        flags = []
        if not self.fin:
            flags.append("FIN clear")
        for bit, name in ((RSV1, "RSV1"), (RSV2, "RSV2"), (RSV3, "RSV3")):
            if self.rsv & bit:
                flags.append(name)
        return text + (" (%s)" % ", ".join(flags) if flags else "")


def describe_close(payload):
    if not payload:
        return "close without a code"
    if len(payload) == 1:
        return "close with a 1-byte payload"
    code = struct.unpack("!H", payload[:2])[0]
    return "close %d" % code + (" %s" % clip(payload[2:], 24) if len(payload) > 2 else "")


class Context:
    """What every step may consult: --lenient, --timeout."""

    def __init__(self, timeout=2.0, lenient=False):
        self.timeout, self.lenient = timeout, lenient


class Session:
    """One WebSocket connection as raw bytes. client: this side is the
    client (it masks its frames; the peer must not)."""

    def __init__(self, sock, client, ctx, rbuf=b"", pmd=None):
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.sock, self.client, self.ctx = sock, client, ctx
        self.rbuf, self.pos = bytearray(rbuf), 0
        self.ended = None          # how the peer's side of TCP ended: "closed", "reset"
        self.pmd = pmd
        self.close_sent = False
        self.closed = False        # the close handshake (or its failure) is over
        self.mid_frame = False     # a frame was left unfinished on purpose or by a failed write
        self.write_broken = None   # why writing stopped, if it did
        self.last_peer_key = None
        self.final_code = None     # the code the program under test should print (client tester)
        self.lenient_close = False
        self.frames_written = 0

    # -- reading
    def deadline(self, nbytes=0):
        """The timeout, plus time for nbytes and for the frames written
        since the last answer (65536 frames of one byte take a while)."""
        extra = nbytes / RATE + self.frames_written * FRAME_TIME
        self.frames_written = 0
        return time.monotonic() + self.ctx.timeout + extra

    def _recv_some(self, deadline):
        if self.ended:
            return False
        left = deadline - time.monotonic()
        if left < 0:
            left = 0
        readable, _, _ = select.select([self.sock], [], [], left)
        if not readable:
            return False
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            self.ended = "reset"
            return True
        except OSError as exc:
            self.ended = "error %s" % errno.errorcode.get(exc.errno, exc.errno)
            return True
        if not data:
            self.ended = "closed"
        self.rbuf += data
        return True

    def _parse(self):
        buf, p = self.rbuf, self.pos
        avail = len(buf) - p
        if avail < 2:
            return None
        b0, b1 = buf[p], buf[p + 1]
        length, off = b1 & 0x7F, 2
        if length == 126:
            if avail < 4:
                return None
            length, off = struct.unpack_from("!H", buf, p + 2)[0], 4
        elif length == 127:
            if avail < 10:
                return None
            length, off = struct.unpack_from("!Q", buf, p + 2)[0], 10
        key = None
        if b1 & 0x80:
            if avail < off + 4:
                return None
            key = bytes(buf[p + off:p + off + 4])
            off += 4
        if avail < off + length:
            return None
        payload = bytes(buf[p + off:p + off + length])
        if key is not None:
            payload = mask(payload, key)
        self.pos = p + off + length
        if self.pos > (1 << 20) and self.pos * 2 > len(buf):
            del buf[:self.pos]
            self.pos = 0
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, key, payload)

    def ended_text(self):
        return {"closed": "the TCP connection closed", "reset": "the TCP connection reset"}.get(
            self.ended, self.ended or "nothing")

    def next_frame(self, expected, deadline):
        """The peer's next frame, or None once its TCP side ended; raises
        CaseFail when nothing comes by the deadline or the frame's masking
        is wrong."""
        while True:
            frame = self._parse()
            if frame is not None:
                self._check_masking(frame, expected)
                return frame
            if self.ended:
                if len(self.rbuf) > self.pos:
                    raise CaseFail(expected, "%s inside a frame" % self.ended_text())
                return None
            if not self._recv_some(deadline) and time.monotonic() >= deadline:
                raise CaseFail(expected, "nothing within %.1f s" % self.ctx.timeout)

    def _check_masking(self, frame, expected):
        if self.client and frame.key is not None:
            raise CaseFail(expected, "a masked frame from the server (%s)" % frame)
        if not self.client:
            if frame.key is None:
                raise CaseFail(expected, "an unmasked frame from the client (%s)" % frame)
            if frame.key == self.last_peer_key:
                raise CaseFail(expected, "two frames in a row masked with the key %s"
                               % frame.key.hex())
            self.last_peer_key = frame.key

    def read_message(self, expected, size_hint=0):
        """The peer's next data message, reassembled and inflated: (opcode,
        data). Anything else raises CaseFail."""
        deadline = self.deadline(size_hint)
        frame = self.next_frame(expected, deadline)
        if frame is None:
            raise CaseFail(expected, "%s without a close frame" % self.ended_text())
        if frame.opcode not in (TEXT, BINARY):
            raise CaseFail(expected, str(frame))
        compressed = self._check_rsv(frame, expected, first=True)
        opcode, parts = frame.opcode, [frame.payload]
        while not frame.fin:
            frame = self.next_frame(expected, deadline)
            if frame is None:
                raise CaseFail(expected, "%s inside a message" % self.ended_text())
            if frame.opcode != CONT:
                raise CaseFail(expected, "%s inside a fragmented message" % frame)
            self._check_rsv(frame, expected, first=False)
            parts.append(frame.payload)
        data = b"".join(parts)
        if compressed:
            try:
                data = self.pmd.decompress(data)
            except ValueError as exc:
                raise CaseFail(expected, "a compressed message that does not inflate with %s"
                                         " (%s)" % (self.pmd.params, exc)) from None
        return opcode, data

    def _check_rsv(self, frame, expected, first):
        if frame.rsv & (RSV2 | RSV3):
            raise CaseFail(expected, "%s from the peer" % frame)
        if frame.rsv & RSV1:
            if not self.pmd:
                raise CaseFail(expected, "%s without permessage-deflate" % frame)
            if not first:
                raise CaseFail(expected, "RSV1 on a continuation frame (%s)" % frame)
            return True
        return False

    # -- writing
    def write(self, data, chunk=None, pause=0.0):
        """Writes data in pieces of chunk bytes (all at once without),
        pause seconds apart, reading what the peer sends meanwhile so that
        neither side stalls on a full buffer. Returns False once the peer
        closed, reset, or took nothing for the timeout: the rest is
        dropped and the case goes on to its expectations."""
        if self.write_broken:
            return False
        view = memoryview(data)
        step = chunk or max(len(view), 1)
        for off in range(0, len(view), step):
            if off and pause:
                self.wait(pause)
            if not self._write_piece(view[off:off + step]):
                self.mid_frame = True
                return False
        return True

    def _write_piece(self, piece):
        progress = time.monotonic()
        while piece:
            now = time.monotonic()
            if now - progress > self.ctx.timeout:
                self.write_broken = "the peer read nothing for %.1f s" % self.ctx.timeout
                return False
            rlist = [] if self.ended else [self.sock]
            readable, writable, _ = select.select(rlist, [self.sock], [], 0.05)
            if readable:
                self._recv_some(now)
            if not writable:
                continue
            try:
                sent = self.sock.send(piece)
            except BlockingIOError:
                continue
            except OSError as exc:
                self.write_broken = errno.errorcode.get(exc.errno, str(exc))
                return False
            piece = piece[sent:]
            progress = now
        return True

    def wait(self, seconds):
        """Lets seconds pass, buffering what arrives."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self._recv_some(end):
                break
            if self.ended:
                time.sleep(max(0.0, end - time.monotonic()))
                break

    def frame_bytes(self, opcode, payload=b"", fin=True, rsv=0, masked=None):
        masked = self.client if masked is None else masked
        return encode_frame(opcode, payload, fin, rsv, os.urandom(4) if masked else None)

    # -- the end of the connection
    def finish(self):
        """After the close frames: the server's side ends TCP first. As the
        client, wait for that (and nothing more may arrive); as the server,
        end it."""
        self.closed = True
        if not self.client:
            self.shutdown()
            return
        deadline = self.deadline()
        while not self.ended:
            if not self._recv_some(deadline) and time.monotonic() >= deadline:
                raise CaseFail("the TCP connection closed by the server after the close "
                               "handshake", "it still open after %.1f s" % self.ctx.timeout)
        if len(self.rbuf) > self.pos:
            raise CaseFail("nothing after the close frame",
                           "%d more bytes: %s" % (len(self.rbuf) - self.pos,
                                                  clip(self.rbuf[self.pos:])))

    def shutdown(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        # Read what the peer still sends (its last frame, its FIN) briefly so
        # that closing does not turn into a reset under its close frame.
        end = time.monotonic() + min(self.ctx.timeout, 0.5)
        while not self.ended and self._recv_some(end):
            pass
        self.sock.close()
