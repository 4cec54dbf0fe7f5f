// Peer for benchmarks: a Node `ws` server on the same path as wsgate.
// usage: node bench/peers/node_echo.js PORT [PATH] [echo|chat]   (or PEER_MODE=chat)
//   echo (default): every message is sent back to its sender.
//   chat: the wsgate-protocol subset the fan-out benchmark needs, with the
//   shapes of PROTOCOL.md: a welcome on connect (roomId, userId from the
//   query) and {"type":"chat","message":M} broadcast to every connection of
//   the sender's room, sender included, with a per-room "seq" (+1 per chat,
//   counted in memory only). Nothing else (no store: nothing is written
//   anywhere, no user_joined/user_left, other types ignored).
const crypto = require('crypto');
const { WebSocketServer } = require('ws');
const port = parseInt(process.argv[2] || '8090', 10);
const path = process.argv[3] || '/staging';
const mode = process.argv[4] || process.env.PEER_MODE || 'echo';
const wss = new WebSocketServer({ host: '127.0.0.1', port, path, perMessageDeflate: false });
const now = () => Math.floor(Date.now() / 1000);
const rooms = new Map(); // roomId -> { members: Set of ws, seq: last chat's seq }

if (mode === 'chat') {
  wss.on('connection', (ws, req) => {
    const q = new URL(req.url, 'http://localhost').searchParams;
    const userId = q.get('userId') || 'anonymous';
    const username = q.get('username') || userId;
    const roomId = q.get('roomId') || 'general';
    const connectionId = crypto.randomBytes(12).toString('base64url');
    let room = rooms.get(roomId);
    if (!room) rooms.set(roomId, (room = { members: new Set(), seq: 0 }));
    const members = room.members;
    members.add(ws);
    ws.send(JSON.stringify({ type: 'welcome', data: { connectionId, userId, roomId,
      message: `Welcome to room ${roomId}!`, timestamp: now() } }));
    ws.on('message', (data, isBinary) => {
      let body;
      try { body = JSON.parse(data.toString()); } catch { return; }
      if (!body || typeof body !== 'object' || (body.type !== undefined && body.type !== 'chat')) return;
      if (typeof body.message !== 'string' || body.message.trim() === '') return;
      room.seq += 1;
      const out = JSON.stringify({ type: 'chat', data: { messageId: crypto.randomUUID(), roomId,
        seq: room.seq, senderId: userId, senderName: username, message: body.message, timestamp: now() } });
      for (const m of members) m.send(out);
    });
    ws.on('close', () => {
      members.delete(ws);
      if (members.size === 0) rooms.delete(roomId);
    });
  });
} else {
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
}
wss.on('listening', () => console.log(`node ws ${mode} listening on ${port}${path}`));
process.on('SIGTERM', () => {
  for (const ws of wss.clients) ws.terminate();
  wss.close(() => process.exit(0));
});
