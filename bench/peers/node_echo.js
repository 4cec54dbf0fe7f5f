// Peer for benchmarks: a Node `ws` echo server on the same path as wsgate.
// usage: node bench/peers/node_echo.js PORT [PATH]
const { WebSocketServer } = require('ws');
const port = parseInt(process.argv[2] || '8090', 10);
const path = process.argv[3] || '/staging';
const wss = new WebSocketServer({ host: '127.0.0.1', port, path, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => console.log(`node ws echo listening on ${port}${path}`));
process.on('SIGTERM', () => wss.close(() => process.exit(0)));
