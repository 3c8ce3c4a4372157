// A node `ws` client against a WebSocket echo server (keel's
// examples/ws-echo-server): binary and text messages of many sizes, a
// ping, the close handshake; --deflate offers permessage-deflate and checks
// it was agreed; --cafile F talks wss:// and verifies the server against F.
// Prints one line per check; exits 0 only if all pass.
// usage: NODE_PATH=/usr/share/nodejs node tests/ws_interop_client.js URL [--deflate] [--cafile F]
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const WebSocket = require('ws');

const url = process.argv[2];
const deflate = process.argv.includes('--deflate');
const caIdx = process.argv.indexOf('--cafile');
const opts = { perMessageDeflate: deflate, maxPayload: 1 << 21 };
if (caIdx > 0) opts.ca = fs.readFileSync(process.argv[caIdx + 1]);
const sizes = [0, 1, 125, 126, 127, 1000, 65535, 65536, 200000, 1000000];
let failures = 0;
const timer = setTimeout(() => { console.log('FAIL timeout'); process.exit(1); }, 60000);

const ws = new WebSocket(url, opts);
const queue = [];
let waiting = null;
ws.on('message', (data, isBinary) => {
  const m = { data, isBinary };
  if (waiting) { const w = waiting; waiting = null; w(m); } else queue.push(m);
});
const next = () => new Promise((res) => { if (queue.length) res(queue.shift()); else waiting = res; });
function check(ok, what) { console.log((ok ? 'PASS ' : 'FAIL ') + what); if (!ok) failures++; }

ws.on('open', async () => {
  const ext = ws.extensions || '';
  check(deflate === ext.includes('permessage-deflate'), 'extensions ' + JSON.stringify(ext));
  for (const n of sizes) {
    const data = crypto.randomBytes(n);
    ws.send(data, { binary: true });
    let m = await next();
    check(m.isBinary && Buffer.compare(m.data, data) === 0, 'binary ' + n);
    const text = Array.from('é€😀x'.repeat(Math.floor(n / 10) + 1))
      .slice(0, Math.max(Math.floor(n / 4), 1)).join('');
    ws.send(text);
    m = await next();
    check(!m.isBinary && m.data.toString() === text, 'text ' + Buffer.byteLength(text));
  }
  ws.ping(Buffer.from('payload'));
  ws.once('pong', (p) => {
    check(p.toString() === 'payload', 'ping');
    ws.close(4001, 'bye');
  });
});
ws.on('close', (code) => {
  check(code === 4001, 'close code ' + code);
  clearTimeout(timer);
  console.log(failures + ' failed');
  process.exit(failures ? 1 : 0);
});
ws.on('error', (e) => { console.log('FAIL error ' + e.message); process.exit(1); });
