#!/usr/bin/python3
"""Write the seed corpus of fuzz_ws_frame.

Each file is one chunking byte (the fuzzer's first byte) followed by a
client byte stream: masked frames, valid and not. Run from anywhere:
    /usr/bin/python3 tests/fuzz/make_ws_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "fuzz_ws_frame")
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(op, payload=b"", fin=True, rsv=0, masked=True, lenform=None):
    """One client frame; lenform forces 7/16/64-bit length encoding."""
    b0 = (0x80 if fin else 0) | rsv | op
    n = len(payload)
    form = lenform or (7 if n < 126 else 16 if n < 65536 else 64)
    m = 0x80 if masked else 0
    if form == 7:
        hdr = bytes([b0, m | n])
    elif form == 16:
        hdr = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if not masked:
        return hdr + payload
    body = bytes(c ^ MASK[i % 4] for i, c in enumerate(payload))
    return hdr + MASK + body


def close(code=None, reason=b""):
    return frame(0x8, b"" if code is None else struct.pack(">H", code) + reason)


SEEDS = {
    "text_hello": (0, frame(0x1, b"Hello")),
    "binary_125": (7, frame(0x2, bytes(range(125)))),
    "binary_126": (1, frame(0x2, b"x" * 126)),
    "binary_4096": (33, frame(0x2, b"y" * 4096)),
    "fragmented_text_ping": (
        5,
        frame(0x1, b"Hel", fin=False) + frame(0x9, b"ping") + frame(0x0, b"lo ", fin=False)
        + frame(0xA, b"") + frame(0x0, "w\u00f6rld \u20ac".encode()),
    ),
    "utf8_split": (2, frame(0x1, b"\xe2", fin=False) + frame(0x0, b"\x82\xac")),
    "utf8_bad": (0, frame(0x1, b"ok\xed\xa0\x80")),
    "close_empty": (0, close()),
    "close_reason": (3, close(1000, b"bye") + frame(0x1, b"late")),
    "close_bad_code": (0, close(1005)),
    "close_one_byte": (0, frame(0x8, b"\x03")),
    "unmasked": (0, frame(0x1, b"hi", masked=False)),
    "rsv_opcode": (9, frame(0x1, b"a", rsv=0x40) + frame(0x3, b"b")),
    "non_minimal": (4, frame(0x2, b"z" * 100, lenform=16) + frame(0x2, b"q", lenform=64)),
    "many_messages": (6, b"".join(frame(0x1 + (i & 1), b"m" * i) for i in range(20)) + close(1001)),
    "over_limit": (8, frame(0x2, b"a" * 4000, fin=False) + frame(0x0, b"b" * 4000, fin=False)
                   + frame(0x0, b"c" * 4000, fin=False) + frame(0x0, b"d" * 4000, fin=False)
                   + frame(0x0, b"e" * 500)),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (chunking, stream) in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([chunking]) + stream)
    print(f"wrote {len(SEEDS)} files to {OUT}")


if __name__ == "__main__":
    main()
