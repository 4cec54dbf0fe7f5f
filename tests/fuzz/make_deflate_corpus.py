#!/usr/bin/python3
"""Write the seed corpus of fuzz_ws_deflate: compressed client streams.

Each file is a chunking byte, a parameters byte (low 3 bits: client window
bits - 8; bit 3: client_no_context_takeover; high bits: server window and
level for the round trip), then masked client frames. Run from anywhere:
    /usr/bin/python3 tests/fuzz/make_deflate_corpus.py
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_ws_deflate")
MASK = bytes([0x12, 0x9C, 0x40, 0xE7])


def frame(op, payload=b"", fin=True, rsv1=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, 0x80 | n])
    elif n < 65536:
        hdr = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return hdr + MASK + bytes(c ^ MASK[i % 4] for i, c in enumerate(payload))


def deflate(data, bits=15, comp=None):
    """Sync-flushed raw DEFLATE without its 00 00 ff ff tail (RFC 7692)."""
    c = comp or zlib.compressobj(6, zlib.DEFLATED, -bits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


HELLO = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
ctx = zlib.compressobj(6, zlib.DEFLATED, -15)
CHAT = b'{"type":"chat","roomId":"general","text":"hello there, how is everyone?"}'
big = deflate(b"\x00" * 200000)

SEEDS = {
    "rfc_hello": (0, 0x07, frame(0x1, HELLO, rsv1=True)),
    "rfc_fragmented": (5, 0x07, frame(0x1, HELLO[:3], fin=False, rsv1=True) + frame(0x0, HELLO[3:])),
    "rfc_takeover": (0, 0x07, frame(0x1, HELLO, rsv1=True)
                     + frame(0x1, bytes([0xF2, 0x00, 0x11, 0x00, 0x00]), rsv1=True)),
    "rfc_stored": (1, 0x0F, frame(0x1, bytes([0x00, 0x05, 0x00, 0xFA, 0xFF]) + b"Hello\x00", rsv1=True)),
    "rfc_bfinal": (2, 0x07, frame(0x1, bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00]), rsv1=True)
                   + frame(0x1, HELLO, rsv1=True)),
    "rfc_two_blocks": (3, 0x07, frame(0x1, bytes([0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF,
                                                  0xCA, 0xC9, 0xC9, 0x07, 0x00]), rsv1=True)),
    "chat_context": (4, 0x37, frame(0x1, deflate(CHAT, comp=ctx), rsv1=True)
                     + frame(0x9, b"ping") + frame(0x1, deflate(CHAT, comp=ctx), rsv1=True)),
    "chat_window_9": (6, 0x19, frame(0x1, deflate(CHAT * 4, bits=9), rsv1=True)),
    "mixed_plain": (7, 0x0F, frame(0x1, b"plain") + frame(0x2, deflate(bytes(range(256)) * 3), rsv1=True)),
    "bomb": (8, 0x0F, frame(0x2, big[:2000], fin=False, rsv1=True) + frame(0x0, big[2000:])),
    "utf8_bad": (9, 0x07, frame(0x1, deflate(b"ok \xed\xa0\x80"), rsv1=True)),
    "utf8_split": (10, 0x07, frame(0x1, deflate("\u20ac\u20ac".encode())[:2], fin=False, rsv1=True)
                   + frame(0x0, deflate("\u20ac\u20ac".encode())[2:])),
    "invalid_btype": (0, 0x07, frame(0x2, b"\xff\xff\xff", rsv1=True)),
    "cut_block": (11, 0x07, frame(0x1, deflate(CHAT)[:20], rsv1=True)),
    "rsv1_continuation": (12, 0x07, frame(0x1, b"a", fin=False) + frame(0x0, b"b", rsv1=True)),
    "rsv1_ping": (0, 0x07, frame(0x9, b"p", rsv1=True)),
    "empty_compressed": (13, 0x0F, frame(0x1, b"", rsv1=True) + frame(0x1, b"\x00", rsv1=True)),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (chunking, params, stream) in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([chunking, params]) + stream)
    print(f"wrote {len(SEEDS)} files to {OUT}")


if __name__ == "__main__":
    main()
