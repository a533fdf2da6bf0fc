'use strict';
// Hostile WebSocket clients: a ping flood from a client that never reads
// (each ping owes a pong, and every byte queued for a client counts against
// max_output_buffer), and a frame header announcing more than
// max_message_size (refused at the header, before any payload).

const test = require('node:test');
const assert = require('node:assert');

const { startDnoded } = require('../lib/harness');
const { RSS_SCALE, rssKb, assertAnswered } = require('../lib/hostile');
const { WsConn, OP } = require('../lib/raw_http');

test('a ping flood that never reads its pongs is cut off at max_output_buffer', async (t) => {
    const d = await startDnoded({ config: { workers: 1, max_output_buffer: 1048576 } }, t);
    const [worker] = await d.waitWorkers(1);
    const before = rssKb(worker);
    const c = await WsConn.open(d.port);
    t.after(() => c.close());
    c.sock.pause(); // never read: the pongs pile up on the server's side
    const ping = Buffer.alloc(125, 0x70);
    // 64 MiB of pings (125-byte payloads, the most a control frame holds),
    // written as fast as the socket takes them, until the server hangs up.
    let sent = 0;
    let closed = false;
    c.sock.once('close', () => { closed = true; });
    c.sock.on('error', () => {});
    const deadline = Date.now() + 15000;
    while (!closed && sent < 64 * 1048576 && Date.now() < deadline) {
        const batch = [];
        for (let i = 0; i < 512; i++) {
            batch.push(require('../lib/raw_http').frame(OP.PING, ping));
        }
        const buf = Buffer.concat(batch);
        sent += buf.length;
        if (!c.sock.write(buf)) {
            await new Promise((resolve) => {
                const done = () => resolve();
                c.sock.once('drain', done);
                c.sock.once('close', done);
                setTimeout(done, 200);
            });
        }
    }
    const grown = rssKb(worker) - before;
    t.diagnostic(`the worker grew by ${grown} KiB; ${sent} bytes of pings sent`);
    assert.ok(grown < 32 * 1024 * RSS_SCALE, `the worker grew by ${grown} KiB under the ping flood`);
    await assertAnswered(d, 2000, 'a client beside the ping flood');
    await d.waitForLog(/over max_output_buffer/);
});

test('a frame announcing 2^63 bytes is refused at its header', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t);
    const c = await WsConn.open(d.port);
    t.after(() => c.close());
    // FIN + text, masked, 64-bit length 2^63 - 1, a mask, and no payload.
    const head = Buffer.from([0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        1, 2, 3, 4]);
    c.sock.write(head);
    const code = await c.closeCode();
    assert.strictEqual(code, 1009, 'closed as too large without waiting for a payload');
    await assertAnswered(d, 2000);
});

test('DNS rebinding: Host and Origin of a name not the server\'s are refused', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t); // no allowed_origins
    await assert.rejects(WsConn.open(d.port, {
        headers: { Host: `evil.example:${d.port}`, Origin: `http://evil.example:${d.port}` },
    }), (err) => err.status === 403);
    // The server's own pages still connect.
    const own = await WsConn.open(d.port, { headers: { Origin: `http://127.0.0.1:${d.port}` } });
    own.close();
});
