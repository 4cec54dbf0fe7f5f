"""The point-in-time archive keeps each page once per second of commit time
(a 'K' record: the commits of one second, each page as the last of them
left it; docs/storage.md). A restore stops at whole seconds, so nothing it
can reach is lost: restored to any second of a stream of many small
commits, the store is exactly a state the server was in (every room's
messages 1..lastSeq, no gap, no message past its counter), it holds every
chat acknowledged before that second ended and none sent after it."""
import asyncio
import json
import sqlite3
import struct
import time

from test_pitr import files, load_keys, read_archive
from test_store import connect

ROOMS = 4


async def stream(srv, seconds):
    """Chats one at a time per room (each acknowledged before the next), in
    ROOMS rooms, for `seconds`: [(room, sent_at, acked_at)]."""
    log = []

    async def room(r):
        ws = await connect(srv, userId=f"u{r}", roomId=f"r{r}")
        end = time.time() + seconds
        i = 0
        while time.time() < end:
            sent = time.time()
            await ws.send(json.dumps({"type": "chat", "message": f"m{i}"}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert msg["type"] != "error", msg
                if msg["type"] == "chat" and msg["data"]["message"] == f"m{i}":
                    break
            log.append((f"r{r}", sent, time.time(), msg["data"]["seq"]))
            i += 1
        await ws.close()
    await asyncio.gather(*(room(r) for r in range(ROOMS)))
    return log


def restored(tmp_path, data, to):
    from test_store import cli
    out = tmp_path / f"at-{to}.db"
    cli("restore", "--data-dir", str(data), "--to", str(to), "--out", str(out))
    con = sqlite3.connect(str(out))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = {}
        for room, seq in con.execute("SELECT roomId, seq FROM messages ORDER BY roomId, seq"):
            seqs.setdefault(room, []).append(seq)
        last = dict(con.execute("SELECT roomId, lastSeq FROM rooms"))
    finally:
        con.close()
    out.unlink()
    return seqs, last


def test_restore_to_every_second_of_a_stream_of_small_commits(start_server, tmp_path):
    data = tmp_path / "data"
    srv = start_server(args=["--data-dir", str(data)])
    time.sleep(1.1)
    log = asyncio.run(stream(srv, 4.5))
    assert len(log) > 40, "too few chats to cut seconds through"
    assert srv.stop() == 0

    # the archive kept fewer page images than the WAL frames it covers
    _, keys = load_keys(data)
    entries = frames = 0
    for p in files(data, "wal-"):
        for kind, raw in read_archive(p, keys):
            if kind == "K":
                frames += struct.unpack(">I", raw[24:28])[0]
                entries += struct.unpack(">I", raw[48:52])[0]
    assert entries and entries < frames, (entries, frames)

    first, last_t = int(log[0][1]), int(log[-1][2])
    for to in range(first, last_t + 1):
        seqs, counters = restored(tmp_path, data, to)
        for r in range(ROOMS):
            room = f"r{r}"
            got = seqs.get(room, [])
            # a state the server was in: the room's messages are 1..lastSeq
            assert got == list(range(1, len(got) + 1)), (to, room, got)
            assert counters.get(room, 0) == len(got), (to, room, counters.get(room), len(got))
            acked = [seq for rm, sent, ack, seq in log if rm == room and ack < to + 1]
            later = [seq for rm, sent, ack, seq in log if rm == room and sent >= to + 1]
            # every chat acknowledged by the end of the second is there,
            # and none sent after it
            assert set(acked) <= set(got), (to, room, max(acked), len(got))
            assert not set(later) & set(got), (to, room, min(later), len(got))
