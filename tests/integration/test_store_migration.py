"""A data directory of the first store layout opens with this version and
migrates with nothing lost.

The old layout is written here as the first layout's code wrote it (its
SQL, copied): three values sealed one by one per message (AES-256-GCM blob
[1][key id][nonce][ciphertext][tag], the GCM AAD being the blob's first 5
bytes then "messages.<col>:<room>:<seq>"), a text messageId under a UNIQUE
index, a timestamp index, a hex blind index as senderKey, every write
copied whole into pitr_log, and a base snapshot of that layout in pitr/.
After the migration every message reads back, byte for byte, through
history, export, backup and restore (to a time between two writes, from
the old base and the old change log), idempotent publish still finds the
old clientMessageId, and the key that sealed the old rows is kept."""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import time
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from test_store import DB, chat, cli, connect, recv_type

# The first layout's schema, as its store.c created it.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (roomId TEXT PRIMARY KEY, ownerId NOT NULL, createdAt INTEGER NOT NULL,
  lastActivity INTEGER NOT NULL, lastSeq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS messages (roomId TEXT NOT NULL, seq INTEGER NOT NULL, messageId TEXT NOT NULL UNIQUE,
  senderId NOT NULL, senderName NOT NULL, message NOT NULL, timestamp INTEGER NOT NULL, clientMessageId TEXT,
  senderKey TEXT, PRIMARY KEY (roomId, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_timestamp ON messages(timestamp);
CREATE INDEX IF NOT EXISTS rooms_idle ON rooms(lastActivity) WHERE lastSeq = 0;
CREATE INDEX IF NOT EXISTS messages_client ON messages(senderKey, clientMessageId) WHERE clientMessageId IS NOT NULL;
CREATE TABLE IF NOT EXISTS pitr_log (id INTEGER PRIMARY KEY AUTOINCREMENT, t_ms INTEGER NOT NULL,
  kind INTEGER NOT NULL, roomId TEXT, seq INTEGER, messageId TEXT, senderId, senderName, message,
  timestamp INTEGER, clientMessageId TEXT, senderKey TEXT);
CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, t INTEGER);
"""


class OldStore:
    """Writes a data directory as the first layout did."""

    def __init__(self, data, encrypted):
        self.data = data
        self.encrypted = encrypted
        self.now = int(time.time())
        self.key = os.urandom(32)
        self.index_key = os.urandom(32)
        data.mkdir()
        (data / "pitr").mkdir()
        if encrypted:
            # key 1 sealed the old rows and was retired 30 days ago (past
            # the deletion window): it must survive, the rows need it
            ring = {"version": 1, "active": 2, "index_key": base64.b64encode(self.index_key).decode(),
                    "keys": [{"id": 1, "key": base64.b64encode(self.key).decode(), "created": self.now - 90 * 86400,
                              "retired": self.now - 30 * 86400},
                             {"id": 2, "key": base64.b64encode(os.urandom(32)).decode(),
                              "created": self.now - 30 * 86400, "retired": None}]}
            fd = os.open(data / "keys.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(ring, f)
        # the base snapshot: the empty tables, before any write
        base_t = (self.now - 200) * 1000
        base = sqlite3.connect(str(data / "pitr" / f"base-{base_t}-0.db"))
        base.executescript(OLD_SCHEMA)
        base.close()
        self.con = sqlite3.connect(str(data / DB))
        self.con.executescript(OLD_SCHEMA)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.messages = []

    def seal(self, text, aad):
        if not self.encrypted:
            return text
        hdr = bytes([1]) + (1).to_bytes(4, "big")
        nonce = os.urandom(12)
        return hdr + nonce + AESGCM(self.key).encrypt(nonce, text.encode(), hdr + aad.encode())

    def sender_key(self, user):
        if not self.encrypted:
            return user[:64]
        return hmac.new(self.index_key, b"senderId\x00" + user.encode(), hashlib.sha256).hexdigest()

    def post(self, room, user, name, text, t, message_id=None, client_id=None):
        seq = 1 + sum(1 for m in self.messages if m["roomId"] == room)
        m = {"messageId": message_id or str(uuid.uuid4()), "roomId": room, "seq": seq, "senderId": user,
             "senderName": name, "message": text, "timestamp": t}
        values = (room, seq, m["messageId"], self.seal(user, f"messages.s:{room}:{seq}"),
                  self.seal(name, f"messages.n:{room}:{seq}"), self.seal(text, f"messages.m:{room}:{seq}"), t,
                  client_id, self.sender_key(user))
        owner = self.seal(user, f"rooms.o:{room}")
        with self.con:
            self.con.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
            self.con.execute("INSERT INTO pitr_log(t_ms, kind, roomId, seq, messageId, senderId, senderName,"
                             " message, timestamp, clientMessageId, senderKey) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?,"
                             " ?, ?)", (t * 1000,) + values)
            self.con.execute("INSERT INTO rooms(roomId, ownerId, createdAt, lastActivity) VALUES (?, ?, ?, ?)"
                             " ON CONFLICT(roomId) DO UPDATE SET lastActivity = excluded.lastActivity",
                             (room, owner, t, t))
            self.con.execute("INSERT INTO pitr_log(t_ms, kind, roomId, seq, senderId, timestamp)"
                             " VALUES (?, 3, ?, 0, ?, ?)", (t * 1000, room, owner, t))
            self.con.execute("UPDATE rooms SET lastSeq = ? WHERE roomId = ?", (seq, room))
        self.messages.append(m)
        return m

    def close(self):
        self.con.close()


def build_old(data, encrypted):
    old = OldStore(data, encrypted)
    early, late = old.now - 100, old.now - 50
    old.post("old", "alice", "Alice A.", "first, with \"quotes\", commas", early, client_id="c-1")
    old.post("old", "bob", "Bob", "zweite Nachricht \u00e9\u00e8 \U0001f600", early)
    old.post("old", "alice", "Alice A.", "line\nbreak", early, message_id="legacy-id-not-a-uuid")
    old.post("old", "carol", "Carol", "after the cut", late)
    old.post("side", "dave", "Dave", "another room", late)
    old.close()
    return old, (early + late) // 2


def export(data, room, encrypted=True):
    res = cli("export", "--data-dir", str(data), "--room", room,
              *([] if encrypted else ["--set", "enable_encryption=false"]))
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def serve_copy(tmp_path, name, db_file, old):
    """A data directory holding db_file as the store, with old's key file."""
    d = tmp_path / name
    d.mkdir()
    shutil.copy(db_file, d / DB)
    if old.encrypted:
        shutil.copy(old.data / "keys.json", d / "keys.json")
        os.chmod(d / "keys.json", 0o600)
    return d


def in_room(messages, room):
    return [m for m in messages if m["roomId"] == room]


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plaintext"])
def test_old_layout_migrates_with_nothing_lost(start_server, tmp_path, encrypted):
    data = tmp_path / "data"
    old, cut = build_old(data, encrypted)
    enc = {"enable_encryption": "true" if encrypted else "false"}
    srv = start_server(settings=enc, args=["--data-dir", str(data)])

    async def history(room, user="reader"):
        a = await connect(srv, userId=user, roomId=room)
        await a.send(json.dumps({"type": "history"}))
        h = (await recv_type(a, "history"))["data"]
        await a.close()
        return h["messages"]
    assert asyncio.run(history("old")) == in_room(old.messages, "old")
    assert asyncio.run(history("side")) == in_room(old.messages, "side")

    con = sqlite3.connect(str(data / DB))
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = 'index'"
                                         " AND tbl_name = 'messages'")}
    assert indexes == {"messages_client"}, indexes
    con.close()

    async def more():
        a = await connect(srv, userId="alice", username="Alice%20A.", roomId="old")
        # the old clientMessageId is still found: the original comes back
        again = await chat(a, "first, with \"quotes\", commas", clientMessageId="c-1")
        new = await chat(a, "written after the migration")
        await a.close()
        return again, new
    again, new = asyncio.run(more())
    assert again == old.messages[0]
    assert new["seq"] == 5
    after = in_room(old.messages, "old") + [new]
    assert asyncio.run(history("old")) == after
    assert srv.stop() == 0

    if encrypted:
        # key 1 is past its deletion window but the old rows use it
        ring = json.loads((data / "keys.json").read_text())
        assert [k["id"] for k in ring["keys"]] == [1, 2]

    assert export(data, "old", encrypted) == after
    # backup: everything, served by a new server
    cli("backup", "--data-dir", str(data), "--out", str(tmp_path / "backup.db"))
    assert export(serve_copy(tmp_path, "b", tmp_path / "backup.db", old), "old", encrypted) == after
    # restore from the old base and the old change log (plus the new rows)
    cli("restore", "--data-dir", str(data), "--to", str(cut), "--out", str(tmp_path / "cut.db"))
    restored = serve_copy(tmp_path, "r1", tmp_path / "cut.db", old)
    assert export(restored, "old", encrypted) == [m for m in old.messages if m["roomId"] == "old" and m["timestamp"] < cut]
    assert export(restored, "side", encrypted) == []
    cli("restore", "--data-dir", str(data), "--to", str(int(time.time()) + 1), "--out", str(tmp_path / "all.db"))
    restored = serve_copy(tmp_path, "r2", tmp_path / "all.db", old)
    assert export(restored, "old", encrypted) == after
    assert export(restored, "side", encrypted) == in_room(old.messages, "side")
    con = sqlite3.connect(str(tmp_path / "all.db"))
    assert con.execute("SELECT lastSeq FROM rooms WHERE roomId = 'old'").fetchone()[0] == 5
    con.close()
    # the restored file serves, and its counter goes on
    srv2 = start_server(settings=enc, args=["--data-dir", str(restored)], name="restored")

    async def post_restored():
        a = await connect(srv2, userId="erin", roomId="old")
        d = await chat(a, "on the restored store")
        a2 = await connect(srv2, userId="reader", roomId="old")
        await a2.send(json.dumps({"type": "history"}))
        h = (await recv_type(a2, "history"))["data"]["messages"]
        await a.close()
        await a2.close()
        return d, h
    d, h = asyncio.run(post_restored())
    assert d["seq"] == 6
    assert h == after + [d]


def test_old_layout_with_rotated_key_reads_after_rotation(start_server, tmp_path):
    data = tmp_path / "data"
    old, _ = build_old(data, True)
    cli("rotate-key", "--data-dir", str(data))
    srv = start_server(args=["--data-dir", str(data)])

    async def main():
        a = await connect(srv, userId="frank", roomId="old")
        d = await chat(a, "sealed with key 3")
        await a.send(json.dumps({"type": "history"}))
        h = (await recv_type(a, "history"))["data"]["messages"]
        await a.close()
        return d, h
    d, h = asyncio.run(main())
    assert h == in_room(old.messages, "old") + [d]
    assert srv.stop() == 0
    con = sqlite3.connect(str(data / DB))
    ids = sorted(r[0] for r in con.execute("SELECT DISTINCT substr(message, 2, 4) FROM messages"))
    assert ids == [b"\x00\x00\x00\x01", b"\x00\x00\x00\x03"]
    con.close()
