#!/usr/bin/env node
// A WebSocket echo server on node's ws (Debian's node-ws: run with
// NODE_PATH=/usr/share/nodejs), a peer for keel's conformance tables and
// interop tests.
//
// usage: ws_peer_server.js [--host H] [--port P] [--deflate] [--max-message N]
//   --port P           0 (the default): any free port
//   --deflate          accept permessage-deflate offers (ws's defaults:
//                      messages under 1 KiB go uncompressed)
//   --max-message N    the largest message, after inflating (default 1 MiB)
//
// Prints `ws-peer-server listening on HOST:PORT (node ws VERSION)` once
// listening, echoes every message with its opcode, chooses no subprotocol
// (ws's default would choose the client's first), and stops on SIGTERM or
// SIGINT with status 0.
'use strict';

let ws;
try {
  ws = require('ws');
} catch (err) {
  ws = require('/usr/share/nodejs/ws');
}

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 0, deflate: false, maxMessage: 1 << 20 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--deflate') opts.deflate = true;
    else if (arg === '--host') opts.host = argv[++i];
    else if (arg === '--port') opts.port = Number(argv[++i]);
    else if (arg === '--max-message') opts.maxMessage = Number(argv[++i]);
    else {
      console.error(`ws_peer_server.js: unknown argument ${arg}`);
      process.exit(2);
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const server = new ws.WebSocketServer({
  host: opts.host,
  port: opts.port,
  perMessageDeflate: opts.deflate ? {} : false,
  maxPayload: opts.maxMessage,
  // No subprotocols (ws would otherwise choose the client's first).
  handleProtocols: () => false,
});
server.on('connection', (sock) => {
  sock.on('message', (data, isBinary) => sock.send(data, { binary: isBinary }));
  sock.on('error', () => {});
});
server.on('listening', () => {
  const addr = server.address();
  let version = '?';
  try {
    version = require('/usr/share/nodejs/ws/package.json').version;
  } catch (err) {
    // a ws from elsewhere: its version is not needed
  }
  console.log(`ws-peer-server listening on ${addr.address}:${addr.port} (node ws ${version})`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    for (const client of server.clients) client.terminate();
    server.close(() => process.exit(0));
  });
}
