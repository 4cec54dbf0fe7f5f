"""Peer for benchmarks: a python3-websockets echo server on wsgate's path.
usage: /usr/bin/python3 bench/peers/py_echo.py PORT [PATH]"""
import asyncio
import signal
import sys

import websockets

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 8091
PATH = sys.argv[2] if len(sys.argv) > 2 else "/staging"


async def echo(ws, path):
    if path != PATH:
        await ws.close(1008, "wrong path")
        return
    async for msg in ws:
        await ws.send(msg)


async def main():
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with websockets.serve(echo, "127.0.0.1", PORT, compression=None, max_size=None):
        print(f"python websockets echo listening on {PORT}{PATH}", flush=True)
        await stop


asyncio.run(main())
