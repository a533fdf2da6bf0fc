'use strict';
// Hostile HTTP clients: requests pipelined by a client that never reads the
// answers. dnoded answers one request at a time and reads the next only
// once the answer is out, so such a client costs one answer and at most one
// open file, not one per request.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { startDnoded } = require('../lib/harness');
const { RSS_SCALE, rssKb, fdCount, assertAnswered } = require('../lib/hostile');
const { httpGet } = require('../lib/raw_http');

// A client that writes `bytes` of copies of request and never reads.
async function pipeline(d, t, request, bytes) {
    const sock = net.connect(d.port, '127.0.0.1');
    t.after(() => sock.destroy());
    await new Promise((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
    });
    sock.on('error', () => {});
    sock.pause();
    const chunk = Buffer.from(request.repeat(Math.ceil(65536 / request.length)));
    const deadline = Date.now() + 10000;
    for (let sent = 0; sent < bytes && Date.now() < deadline; sent += chunk.length) {
        if (!sock.write(chunk)) {
            // The server stops reading once an answer waits: so do we.
            await new Promise((resolve) => {
                sock.once('drain', resolve);
                setTimeout(resolve, 300);
            });
        }
    }
    return sock;
}

test('pipelined /metrics requests that are never read hold one answer', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t);
    const [worker] = await d.waitWorkers(1);
    const before = rssKb(worker);
    await pipeline(d, t, 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n', 4 * 1048576);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const grown = rssKb(worker) - before;
    t.diagnostic(`the worker grew by ${grown} KiB`);
    assert.ok(grown < 32 * 1024 * RSS_SCALE, `the worker grew by ${grown} KiB`);
    await assertAnswered(d, 2000, 'a client beside the pipelining one');
});

test('pipelined static GETs never read hold at most one open file', async (t) => {
    const docroot = fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-hostile-'));
    t.after(() => fs.rmSync(docroot, { recursive: true, force: true }));
    fs.writeFileSync(path.join(docroot, 'page.html'), 'x'.repeat(200000));
    const d = await startDnoded({ config: { workers: 1, docroot } }, t);
    const [worker] = await d.waitWorkers(1);
    const before = fdCount(worker);
    await pipeline(d, t, 'GET /page.html HTTP/1.1\r\nHost: x\r\n\r\n', 1048576);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const open = fdCount(worker) - before;
    t.diagnostic(`${open} more descriptors open in the worker`);
    assert.ok(open <= 8, `${open} more descriptors open in the worker`);
    // Others still get the file, and the API.
    const res = await httpGet(d.port, '/page.html');
    assert.strictEqual(res.status, 200);
    await assertAnswered(d, 2000, 'a client beside the pipelining one');
});

test('/metrics is served only to metrics_allow (loopback by default)', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t);
    assert.strictEqual((await httpGet(d.port, '/metrics')).status, 200);
    const e = await startDnoded({ config: { workers: 1, metrics_allow: '10.0.0.0/8 fd00::/8' } }, t);
    assert.strictEqual((await httpGet(e.port, '/metrics')).status, 403);
    assert.strictEqual((await httpGet(e.port, '/healthz')).status, 200);
});
