"""The bytes of the WebSocket protocol for keel's conformance scripts
(tests/ws_conformance*.py): frames and their masking, close payloads, a
UTF-8 validator that fails at the first impossible byte, the
Sec-WebSocket-Extensions grammar, and permessage-deflate (RFC 7692) over
zlib's raw deflate. socket-free: the driver is ws_conformance_lib.py."""

import base64
import hashlib
import struct
import zlib

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1  # as keel's ws_frame_t: RSV1 << 2 | RSV2 << 1 | RSV3
OP_NAMES = {CONT: "continuation", TEXT: "text", BINARY: "binary", CLOSE: "close",
            PING: "ping", PONG: "pong"}
VALID_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
               3000, 3999, 4000, 4999)
INVALID_CODES = (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)


def op_name(opcode):
    return OP_NAMES.get(opcode, "opcode %d" % opcode)


def accept_for(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def mask(data, key):
    """data XOR the 4-byte key repeated; big integers do it at C speed."""
    n = len(data)
    if n == 0:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


def code_valid(code):
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def encode_head(opcode, length, fin=True, rsv=0, key=None):
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if key is not None else 0
    if length < 126:
        head = struct.pack("!BB", first, mbit | length)
    elif length < 65536:
        head = struct.pack("!BBH", first, mbit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mbit | 127, length)
    return head + (key or b"")


def encode_frame(opcode, payload=b"", fin=True, rsv=0, key=None):
    head = encode_head(opcode, len(payload), fin, rsv, key)
    return head + (mask(payload, key) if key is not None else payload)


def close_payload(code=None, reason=b""):
    if code is None:
        return b""
    return struct.pack("!H", code) + reason


# ---- UTF-8 ---------------------------------------------------------------------

def utf8_check(data):
    """(index of the first byte at which data stops being the start of any
    valid UTF-8 text or None, whether it ends at a code point boundary).
    Unicode's table 3-7 byte by byte, so a sequence that cannot be
    completed validly fails at its first impossible byte."""
    need, lo, hi = 0, 0x80, 0xBF
    for i, c in enumerate(data):
        if need:
            if not lo <= c <= hi:
                return i, False
            need, lo, hi = need - 1, 0x80, 0xBF
            continue
        if c < 0x80:
            continue
        if 0xC2 <= c <= 0xDF:
            need = 1
        elif c == 0xE0:
            need, lo = 2, 0xA0
        elif 0xE1 <= c <= 0xEC or 0xEE <= c <= 0xEF:
            need = 2
        elif c == 0xED:
            need, hi = 2, 0x9F
        elif c == 0xF0:
            need, lo = 3, 0x90
        elif 0xF1 <= c <= 0xF3:
            need = 3
        elif c == 0xF4:
            need, hi = 3, 0x8F
        else:
            return i, False
    return None, need == 0


def utf8_valid(data):
    bad, complete = utf8_check(data)
    return bad is None and complete


# ---- permessage-deflate ---------------------------------------------------------------

class PmdParams:
    """Agreed permessage-deflate parameters (RFC 7692 §7.1)."""

    def __init__(self, snct=False, cnct=False, smwb=15, cmwb=15):
        self.snct, self.cnct, self.smwb, self.cmwb = snct, cnct, smwb, cmwb

    def __str__(self):
        return "server_no_context_takeover=%s client_no_context_takeover=%s " \
               "server_max_window_bits=%d client_max_window_bits=%d" % (
                   self.snct, self.cnct, self.smwb, self.cmwb)


def parse_extensions(values):
    """Sec-WebSocket-Extensions field values -> [(name, [(param, value or
    None)])], or raises ValueError on a syntax error (RFC 6455 §9.1;
    values may be tokens or quoted strings)."""
    out = []
    for value in values:
        for element in split_outside_quotes(value, ","):
            element = element.strip()
            if not element:
                continue
            parts = [p.strip() for p in split_outside_quotes(element, ";")]
            if not is_token(parts[0]):
                raise ValueError("bad extension name %r" % parts[0])
            params = []
            for part in parts[1:]:
                if "=" in part:
                    name, val = (s.strip() for s in part.split("=", 1))
                    if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
                        val = val[1:-1]
                    if not is_token(val):
                        raise ValueError("bad parameter value %r" % part)
                else:
                    name, val = part, None
                if not is_token(name):
                    raise ValueError("bad parameter %r" % part)
                params.append((name, val))
            out.append((parts[0], params))
    return out


def split_outside_quotes(text, sep):
    parts, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def is_token(s):
    return bool(s) and all(33 <= ord(c) < 127 and c not in '()<>@,;:\\"/[]?={}' for c in s)


def window_bits(value):
    """A *_max_window_bits value: 8..15 in decimal without a leading zero,
    else None."""
    if value is None or not value.isdigit() or value[0] == "0":
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


class Pmd:
    """One side's permessage-deflate state: compresses what it sends and
    inflates what it receives, each direction with the agreed window and
    context takeover. client: this side is the client."""

    TAIL = b"\x00\x00\xff\xff"

    def __init__(self, params, client):
        self.params = params
        self.send_bits = params.cmwb if client else params.smwb
        self.send_reset = params.cnct if client else params.snct
        self.recv_bits = params.smwb if client else params.cmwb
        self.recv_reset = params.snct if client else params.cnct
        self.compressor = self.decompressor = None

    def can_compress(self):
        # zlib refuses a raw deflate stream with a 256-byte window.
        return self.send_bits >= 9

    def compress(self, data):
        """The compressed payload of a message (None if this side cannot
        compress with the agreed window)."""
        if not self.can_compress():
            return None
        comp = self.compressor
        if comp is None or self.send_reset:
            comp = zlib.compressobj(6, zlib.DEFLATED, -self.send_bits, 8)
        out = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
        self.compressor = comp
        assert out.endswith(self.TAIL)
        return out[:-4]

    def decompress(self, data, limit=0):
        """Inflates a message's payload; raises ValueError when it does not
        inflate with the agreed window and context."""
        dec = self.decompressor
        if dec is None or self.recv_reset:
            dec = zlib.decompressobj(-self.recv_bits)
        try:
            out = dec.decompress(data + self.TAIL)
        except zlib.error as exc:
            raise ValueError(str(exc)) from None
        # A message ended with a BFINAL block (RFC 7692 §7.2.3.4) ends the
        # stream: the next one starts a new one.
        self.decompressor = None if dec.eof else dec
        return out
