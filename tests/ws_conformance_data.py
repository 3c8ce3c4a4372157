"""What keel's WebSocket conformance tables send: Markus Kuhn's UTF-8
decoder stress test, section by section, and payloads (printable text,
random bytes, compressible text and JSON for permessage-deflate)."""

import os
import random

from ws_wire import BINARY, TEXT

def _seqs(*hexes):
    return [bytes.fromhex(h) for h in hexes]


MISSING_LAST = _seqs("c0", "e080", "f08080", "f8808080", "fc80808080",
                     "df", "efbf", "f7bfbf", "fbbfbfbf", "fdbfbfbfbf")

# Markus Kuhn's UTF-8 decoder stress test, section by section: (title,
# [(description, bytes)]); whether each is valid is computed by utf8_check.
KUHN = [
    ("first possible sequence of each length", [
        ("U+0000", b"\x00"), ("U+0080", b"\xc2\x80"), ("U+0800", b"\xe0\xa0\x80"),
        ("U+10000", b"\xf0\x90\x80\x80")]),
    ("first possible 5- and 6-byte forms", [
        ("5 bytes, U+200000", b"\xf8\x88\x80\x80\x80"),
        ("6 bytes, U+4000000", b"\xfc\x84\x80\x80\x80\x80")]),
    ("last possible sequence of each length", [
        ("U+007F", b"\x7f"), ("U+07FF", b"\xdf\xbf"), ("U+FFFF", b"\xef\xbf\xbf"),
        ("U+10FFFF", b"\xf4\x8f\xbf\xbf")]),
    ("last 4-, 5- and 6-byte forms", [
        ("4 bytes, U+1FFFFF", b"\xf7\xbf\xbf\xbf"), ("5 bytes, U+3FFFFFF", b"\xfb\xbf\xbf\xbf\xbf"),
        ("6 bytes, U+7FFFFFFF", b"\xfd\xbf\xbf\xbf\xbf\xbf")]),
    ("other boundaries", [
        ("U+D7FF", b"\xed\x9f\xbf"), ("U+E000", b"\xee\x80\x80"), ("U+FFFD", b"\xef\xbf\xbd"),
        ("U+10FFFF", b"\xf4\x8f\xbf\xbf"), ("U+110000", b"\xf4\x90\x80\x80")]),
    ("unexpected continuation bytes", [
        ("0x80", b"\x80"), ("0xbf", b"\xbf")]
        + [("%d continuation bytes" % n, bytes(0x80 if i % 2 == 0 else 0xBF for i in range(n)))
           for n in range(2, 8)]
        + [("all 64 continuation bytes", bytes(range(0x80, 0xC0)))]),
    ("lonely start bytes, each followed by a space", [
        ("the 32 starts of 2-byte forms", b"".join(bytes([c, 0x20]) for c in range(0xC0, 0xE0))),
        ("the 16 starts of 3-byte forms", b"".join(bytes([c, 0x20]) for c in range(0xE0, 0xF0))),
        ("the 8 starts of 4-byte forms", b"".join(bytes([c, 0x20]) for c in range(0xF0, 0xF8))),
        ("the 4 starts of 5-byte forms", b"".join(bytes([c, 0x20]) for c in range(0xF8, 0xFC))),
        ("the 2 starts of 6-byte forms", b"".join(bytes([c, 0x20]) for c in range(0xFC, 0xFE)))]),
    ("sequences missing their last byte", [
        ("%d-byte form of %s" % (n, cp), seq) for (n, cp), seq in zip(
            [(2, "U+0000"), (3, "U+0000"), (4, "U+0000"), (5, "U+0000"), (6, "U+0000"),
             (2, "U+07FF"), (3, "U+FFFF"), (4, "U+1FFFFF"), (5, "U+3FFFFFF"),
             (6, "U+7FFFFFFF")], MISSING_LAST)]),
    ("concatenated incomplete sequences", [("the ten above", b"".join(MISSING_LAST))]),
    ("impossible bytes", [("0xfe", b"\xfe"), ("0xff", b"\xff"),
                          ("0xfe 0xfe 0xff 0xff", b"\xfe\xfe\xff\xff")]),
    ("overlong forms of '/'", [
        ("%d bytes" % len(s), s) for s in _seqs("c0af", "e080af", "f08080af", "f8808080af",
                                                "fc80808080af")]),
    ("maximal overlong forms", [
        ("%d bytes" % len(s), s) for s in _seqs("c1bf", "e09fbf", "f08fbfbf", "f887bfbfbf",
                                                "fc83bfbfbfbf")]),
    ("overlong forms of NUL", [
        ("%d bytes" % len(s), s) for s in _seqs("c080", "e08080", "f0808080", "f880808080",
                                                "fc8080808080")]),
    ("single UTF-16 surrogates", [
        ("U+%04X" % cp, chr(cp).encode("utf-8", "surrogatepass"))
        for cp in (0xD800, 0xDB7F, 0xDB80, 0xDBFF, 0xDC00, 0xDF80, 0xDFFF)]),
    ("paired UTF-16 surrogates", [
        ("U+%04X U+%04X" % (hi, lo), (chr(hi) + chr(lo)).encode("utf-8", "surrogatepass"))
        for hi in (0xD800, 0xDB7F, 0xDB80, 0xDBFF) for lo in (0xDC00, 0xDFFF)]),
    ("noncharacters (valid)", [
        ("U+FFFE", b"\xef\xbf\xbe"), ("U+FFFF", b"\xef\xbf\xbf"),
        ("U+FDD0..U+FDEF", "".join(chr(c) for c in range(0xFDD0, 0xFDF0)).encode())]
        + [("U+%X" % cp, chr(cp).encode()) for plane in range(1, 17)
           for cp in (plane << 16 | 0xFFFE, plane << 16 | 0xFFFF)]),
    ("other valid text", [
        ("U+FEFF (a BOM)", b"\xef\xbb\xbf"), ("every ASCII byte", bytes(range(128))),
        ("κόσμε", "κόσμε".encode()),
        ("Hello-µ@ßöäüàá-UTF-8!!", "Hello-µ@ßöäüàá-UTF-8!!".encode()),
        ("one code point of each length", "$¢€𐍈".encode())]),
]


# ---- Payloads ----------------------------------------------------------------------

_ASCII = bytes(range(33, 127))


def text_payload(n, seed=0):
    """n bytes of printable ASCII (a rotation of the 94 characters, so that
    a lost or repeated piece shows)."""
    rot = seed % len(_ASCII)
    base = _ASCII[rot:] + _ASCII[:rot]
    return (base * (n // len(base) + 1))[:n]


def binary_payload(n):
    return os.urandom(n)


_WORDS = ("the quick brown fox jumps over lazy dog keel websocket frame message deflate "
          "window context takeover server client payload echo stream worker task deadline "
          "close ping pong text binary fragment continuation").split()


def compressible_text(n, seed=0):
    """n bytes of words drawn from a small vocabulary: compresses well."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n:
        word = rng.choice(_WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out).encode()[:n]


def json_text(n, seed=0):
    """n bytes of JSON-like records: compresses very well."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n:
        rec = '{"id":%d,"name":"%s","score":%d,"tags":["%s","%s"]},' % (
            rng.randrange(10 ** 6), rng.choice(_WORDS), rng.randrange(1000), rng.choice(_WORDS),
            rng.choice(_WORDS))
        out.append(rec)
        size += len(rec)
    return "".join(out).encode()[:n]


def random_letters(n, seed=0):
    rng = random.Random(seed)
    return bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
                 for _ in range(n))


PAYLOAD_KINDS = {
    "compressible text": (TEXT, compressible_text),
    "JSON": (TEXT, json_text),
    "random letters": (TEXT, random_letters),
    "random bytes": (BINARY, lambda n, seed=0: os.urandom(n)),
}


def fmt_size(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return "%d MiB" % (n >> 20)
    if n >= 1024 and n % 1024 == 0:
        return "%d KiB" % (n >> 10)
    return "%d byte%s" % (n, "" if n == 1 else "s")
