// ws-echo-node: a WebSocket echo server on Node.js and the ws module, a
// benchmark peer for keel (tools/bench --suite ws).
//
//   NODE_PATH=/usr/share/nodejs node bench/peers/ws-echo-node.js [--host H] [--port P]
//
// What a Node.js programmer writes: ws's WebSocketServer on its own HTTP
// server, every message sent back with its opcode (binary stays binary),
// permessage-deflate off (ws's server default, said explicitly), ws's other
// defaults untouched. Prints "ws-echo-node listening on ADDR:PORT" once
// ready; SIGINT or SIGTERM exits 0, a bad command line exits 1. Debian's
// node-ws installs the module under /usr/share/nodejs, hence NODE_PATH.
'use strict';

const { WebSocketServer } = require('ws');

const PROG = 'ws-echo-node';

function usage(out) {
  out.write(`usage: ${PROG} [--host H] [--port P]   (default 127.0.0.1:7000)\n`);
}

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 7000 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      usage(process.stdout);
      process.exit(0);
    }
    const value = argv[i + 1];
    if ((arg !== '--host' && arg !== '--port') || value === undefined) {
      usage(process.stderr);
      process.exit(1);
    }
    i++;
    if (arg === '--host') {
      opts.host = value;
    } else if (/^\d+$/.test(value) && Number(value) <= 65535) {
      opts.port = Number(value);
    } else {
      usage(process.stderr);
      process.exit(1);
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
// The listen backlog of the other peers and keel's servers (node's default: 511).
const wss = new WebSocketServer({
  host: opts.host, port: opts.port, backlog: 4096, perMessageDeflate: false,
});

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  // A client that goes away without a close is not the server's failure.
  ws.on('error', () => ws.terminate());
});

wss.on('listening', () => {
  const addr = wss.address();
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  process.stdout.write(`${PROG} listening on ${host}:${addr.port}\n`);
});

wss.on('error', (err) => {
  process.stderr.write(`${PROG}: ${err.message}\n`);
  process.exit(1);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
