#!/usr/bin/env python3
"""Writes the seed corpus of the feed protocol fuzz target
(tests/fuzz/corpus/feed_proto/): what the client reads from the server,
what the server reads from a client, what the client writes. Each file is
a control byte (see tests/fuzz/feed_proto.c) and the bytes.

usage: tests/fuzz/make_feed_corpus.py   (rewrites the seed files it names;
regression files named crash-* are left alone)"""
import os

CLIENT_READS, SERVER_READS, CLIENT_WRITES = 0, 1, 2
AUTHED, TOKEN_OK = 4, 8
CUT = b"\xff"

SEEDS = {
    # The client reads the server's messages, cut at 0xff.
    "cli-session": (CLIENT_READS, CUT.join([
        b'{"op":"auth","ok":true,"conn":3}',
        b'{"op":"sub","topic":"a","ok":true}',
        b'{"op":"update","topic":"a","seq":1,"data":{"value":7}}',
        b'{"id":1,"result":{"n":1}}',
        b'{"id":2,"error":"unknown method"}',
        b'{"op":"unsub","topic":"a","ok":true}'])),
    "cli-auth-failed": (CLIENT_READS, b'{"op":"auth","ok":false,"error":"bad token"}'),
    "cli-sub-refused": (CLIENT_READS, b'{"op":"sub","topic":"z","ok":false,"error":"unknown topic"}'),
    "cli-update-no-seq": (CLIENT_READS, b'{"op":"update","topic":"b","data":{}}'),
    "cli-update-no-topic": (CLIENT_READS, b'{"op":"update","seq":4}'),
    "cli-system": (CLIENT_READS, b'{"op":"news","text":"hi"}' + CUT + b'[1,2,3]' + CUT + b'"str"'),
    "cli-not-json": (CLIENT_READS, b'{"op":' + CUT + b'' + CUT + b'\x00\x01'),
    "cli-big-ids": (CLIENT_READS, CUT.join([b'{"id":1000000000000000}', b'{"id":1000000000000001}',
                                            b'{"id":"7"}'])),
    "cli-strings": (CLIENT_READS, b'{"op":"update","topic":"\\u00e9\\ud83d\\ude00\\u0000x","seq":1}'),
    "cli-deep-string": (CLIENT_READS, b'{"op":"x","s":"' + b"[" * 100 + b'"}'),
    "cli-trailing": (CLIENT_READS, b'{"id":3} garbage' + CUT + b'{"id":4}' + b"[" * 50),
    # What the fuzz target found in ws-client's classify, fixed since:
    # regression inputs. Numbers out of uint64_t's range were converted
    # (undefined), and a message nested 1000 deep overflowed its 64 KiB stack.
    "regress-cli-numbers": (CLIENT_READS, CUT.join([b'{"id":-1}', b'{"id":1.5}', b'{"id":1e400}',
                                                    b'{"op":"update","topic":"a","seq":-3}',
                                                    b'{"op":"update","topic":"a","seq":2.5e300}',
                                                    b'{"op":"auth","ok":true,"conn":1e400}'])),
    "regress-cli-deep": (CLIENT_READS, b"[" * 40 + b"]" * 40 + CUT + b'{"a":' * 1000 + b"1" + b"}" * 1000),
    # The server reads a client's message (and the client its answer).
    "srv-auth": (SERVER_READS | TOKEN_OK, b'{"op":"auth","token":"secret"}'),
    "srv-auth-bad": (SERVER_READS, b'{"op":"auth","token":5}'),
    "srv-sub": (SERVER_READS | AUTHED, b'{"op":"sub","topic":"a","from":12}'),
    "srv-sub-bad-from": (SERVER_READS | AUTHED, b'{"op":"sub","topic":"a","from":-1}'),
    "srv-sub-unknown": (SERVER_READS | AUTHED, b'{"op":"sub","topic":"zz"}'),
    "srv-sub-unauthed": (SERVER_READS, b'{"op":"sub","topic":"a"}'),
    "srv-unsub": (SERVER_READS | AUTHED, b'{"op":"unsub","topic":"b","from":3}'),
    "srv-echo": (SERVER_READS | AUTHED, b'{"id":9,"op":"req","method":"echo","params":{"n":[1,{"x":null}]}}'),
    "srv-echo-big-id": (SERVER_READS | AUTHED, b'{"id":123456789012345678,"op":"req","method":"echo"}'),
    "srv-echo-string-id": (SERVER_READS | AUTHED, b'{"id":"abc","op":"req","method":"echo","params":"p"}'),
    "srv-sleep": (SERVER_READS | AUTHED, b'{"id":1,"op":"req","method":"sleep","params":{"ms":5}}'),
    "srv-unknown-op": (SERVER_READS, b'{"id":[1],"op":"what"}'),
    "srv-not-object": (SERVER_READS, b"[1,2]"),
    "srv-not-json": (SERVER_READS, b"{"),
    "srv-deep": (SERVER_READS | AUTHED, b'{"id":1,"op":"req","method":"echo","params":' + b"[" * 31 + b"]" * 31 + b"}"),
    # The client writes: token, topic (cut at 0xff), then 8 bytes of a sequence number.
    "write-plain": (CLIENT_WRITES, b"secret" + CUT + b"a" + CUT + bytes(7) + b"\x05"),
    "write-quotes": (CLIENT_WRITES, b'to"k\\en' + CUT + b'a"b\\c\x01\x1f' + CUT + b"\x00\x00\x00\x00\x00\x01\x00\x00"),
    "write-utf8": (CLIENT_WRITES, "tök€n".encode() + CUT + "tópic😀".encode() + CUT + b"\x00\x03\x8d\x7e\xa4\xc6\x80\x00"),
    "write-big": (CLIENT_WRITES, b"" + CUT + b"t" * 300 + CUT + b"\xff" * 8),
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "feed_proto")
    os.makedirs(out, exist_ok=True)
    for name, (ctrl, data) in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([ctrl]) + data)


if __name__ == "__main__":
    main()
