"""A member who joins a room on one node while another node publishes
chats there gets every chat sent after its welcome, once, in seq order
(issue 13, docs/redis.md "Joins before the subscription"): while the
worker's subscription to the room is not active yet, the chats published
meanwhile come from the room's Stream.

Node B talks to Redis through a small proxy that holds each SUBSCRIBE to
a room channel back for a while, as a loaded machine does now and then:
the window between the welcome and the subscription becomes wide and
certain instead of rare."""
import asyncio
import time

import pytest

from cluster_util import DelayProxy, node_settings
from test_cluster import (  # noqa: F401  (fixtures)
    PRESENCE, connect, recv_json, redis, send, wait_ready)


def _holds_a_room_subscribe(chunk):
    return b"SUBSCRIBE" in chunk.upper() and b":room:" in chunk


async def _one_round(nodes, room, per_round, pace, delay, min_window):
    writer, _ = await connect(nodes[0], userId="writer", roomId=room)
    acks = {}  # seq -> when the writer sent it
    sent_at = []  # when each chat left the writer, in order

    async def write():
        for k in range(per_round):
            sent_at.append(time.monotonic())
            await send(writer, {"type": "chat", "message": f"{room}-{k}"})
            await asyncio.sleep(pace)

    async def read_acks():
        # chats are acknowledged in the order sent (one connection, one room)
        while len(acks) < per_round:
            msg = await recv_json(writer, 15)
            if msg["type"] == "chat":
                acks[msg["data"]["seq"]] = sent_at[len(acks)]
            else:
                assert msg["type"] in PRESENCE, msg

    wtask = asyncio.ensure_future(write())
    rtask = asyncio.ensure_future(read_acks())
    while len(acks) < per_round // 4:
        await asyncio.sleep(0.005)
    # Fresh connections on node B: their workers have no member in the
    # room, so they subscribe now, while the chats keep coming; the later
    # ones join while the first one's subscription is still held back.
    joiners = []
    for i in range(3):
        ws, _ = await connect(nodes[1], userId=f"joiner{i}", roomId=room)
        joiners.append((ws, time.monotonic()))
        await asyncio.sleep(0.03)
    await wtask
    await rtask
    last = max(acks)
    for joiner, welcomed in joiners:
        seqs = []
        while not seqs or seqs[-1] < last:
            msg = await recv_json(joiner, 15)
            if msg["type"] == "chat":
                seqs.append(msg["data"]["seq"])
            else:
                assert msg["type"] in PRESENCE, msg
        assert seqs == list(range(seqs[0], last + 1)), (room, seqs)
        after = sorted(s for s, t in acks.items() if t > welcomed)
        # chats sent while the subscription was surely held back
        window = [s for s in after if acks[s] < welcomed + delay]
        assert len(window) >= min_window, (len(window), "the window is too small")
        missing = sorted(set(after) - set(seqs))
        assert not missing, (room, "missed", missing, "got from", seqs[0])
        await joiner.close()
    await writer.close()


# window: ten rounds, a window of about 75 chats (one Stream read each);
# pages: a window of over a thousand chats, read in pages of 500 (the
# subscription comes after 1.5 s, its marker with the next second's timer).
@pytest.mark.parametrize("delay,rounds,per_round,pace,min_window", [
    (0.3, 10, 150, 0.004, 20),
    (1.5, 2, 2500, 0.0005, 600),
], ids=["window", "pages"])
def test_a_joiner_on_another_node_misses_no_chat_while_chats_flow(start_server, redis, delay,
                                                                  rounds, per_round, pace,
                                                                  min_window):
    proxy = DelayProxy(redis.port, delay, _holds_a_room_subscribe)
    try:
        a = start_server(settings=node_settings(redis, throttling_enabled="false"), name="node0-")
        b = start_server(settings=node_settings(redis, a, via=proxy.port, throttling_enabled="false"),
                         name="node1-")
        for node in (a, b):
            wait_ready(node)

        async def main():
            for i in range(rounds):
                await _one_round((a, b), f"flow{i}", per_round, pace, delay, min_window)
        asyncio.run(asyncio.wait_for(main(), 240))
        assert proxy.held >= rounds
    finally:
        proxy.close()
