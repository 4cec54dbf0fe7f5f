// A trivial integration backend for benchmarks: answers every POST with the
// same Lambda proxy result, over HTTP/1.1 keep-alive, so what is measured is
// wsgate's side of an integration (event, client, result).
// usage: node bench/integ_backend.js PORT
const http = require('http');
const port = parseInt(process.argv[2] || '9000', 10);
const answer = JSON.stringify({ statusCode: 200, body: JSON.stringify({ type: 'pong' }) });
const server = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(answer) });
    res.end(answer);
  });
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1');
