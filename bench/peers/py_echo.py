"""Peer for benchmarks: a python3-websockets server on wsgate's path.
usage: /usr/bin/python3 bench/peers/py_echo.py PORT [PATH] [echo|chat]   (or PEER_MODE=chat)
  echo (default): every message is sent back to its sender.
  chat: the wsgate-protocol subset the fan-out benchmark needs, with the
  shapes of PROTOCOL.md: a welcome on connect (roomId, userId from the query)
  and {"type":"chat","message":M} broadcast to every connection of the
  sender's room, sender included, with a per-room "seq" (+1 per chat, counted
  in memory only). Nothing else (no store: nothing is written anywhere, no
  user_joined/user_left, other types ignored)."""
import asyncio
import json
import os
import secrets
import signal
import sys
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import websockets

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8091
PATH = sys.argv[2] if len(sys.argv) > 2 else "/staging"
MODE = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("PEER_MODE", "echo")
ROOMS = {}  # roomId -> set of connections
SEQ = {}  # roomId -> the last chat's seq (in memory; kept while the server runs)


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


async def echo(ws, path):
    if path != PATH:
        await ws.close(1008, "wrong path")
        return
    async for msg in ws:
        await ws.send(msg)


async def chat(ws, path):
    url = urlsplit(path)
    if url.path != PATH:
        await ws.close(1008, "wrong path")
        return
    q = parse_qs(url.query)
    user_id = q.get("userId", ["anonymous"])[0]
    username = q.get("username", [user_id])[0]
    room_id = q.get("roomId", ["general"])[0]
    members = ROOMS.setdefault(room_id, set())
    members.add(ws)
    try:
        await ws.send(dumps({"type": "welcome", "data": {
            "connectionId": secrets.token_urlsafe(12), "userId": user_id, "roomId": room_id,
            "message": f"Welcome to room {room_id}!", "timestamp": int(time.time())}}))
        async for msg in ws:
            try:
                body = json.loads(msg)
            except ValueError:
                continue
            if not isinstance(body, dict) or body.get("type", "chat") != "chat":
                continue
            text = body.get("message")
            if not isinstance(text, str) or not text.strip():
                continue
            seq = SEQ[room_id] = SEQ.get(room_id, 0) + 1
            websockets.broadcast(members, dumps({"type": "chat", "data": {
                "messageId": str(uuid.uuid4()), "roomId": room_id, "seq": seq, "senderId": user_id,
                "senderName": username, "message": text, "timestamp": int(time.time())}}))
    except websockets.ConnectionClosed:
        pass
    finally:
        members.discard(ws)
        if not members:
            ROOMS.pop(room_id, None)


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    handler = chat if MODE == "chat" else echo
    async with websockets.serve(handler, "127.0.0.1", PORT, compression=None, max_size=None):
        print(f"python websockets {MODE} listening on {PORT}{PATH}", flush=True)
        await stop


asyncio.run(main())
