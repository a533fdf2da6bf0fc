'use strict';
// Slowloris: connections that start a request or a DNode message and then
// trickle it, or never end it, so as to hold connections and memory. An
// HTTP request must arrive whole within http_header_timeout, a begun DNode
// line must end within line_timeout; past them the server closes.

const test = require('node:test');
const assert = require('node:assert');

const { startDnoded } = require('../lib/harness');
const { fdCount, rssKb, assertAnswered, rawConnect } = require('../lib/hostile');

// Resolves once every socket was closed by the server, or after ms.
function allClosed(socks, ms) {
    return Promise.race([
        Promise.all(socks.map((s) => new Promise((resolve) => {
            if (s.destroyed) resolve();
            s.once('close', resolve);
        }))),
        new Promise((resolve) => setTimeout(resolve, ms)),
    ]);
}

test('HTTP requests trickled a byte at a time are cut at http_header_timeout', async (t) => {
    const d = await startDnoded({ config: { workers: 1, http_header_timeout: 2 } }, t);
    const [worker] = await d.waitWorkers(1);
    const before = fdCount(worker);
    const socks = [];
    const timers = [];
    t.after(() => {
        timers.forEach(clearInterval);
        socks.forEach((s) => s.destroy());
    });
    for (let i = 0; i < 100; i++) {
        const s = await rawConnect(d.port);
        s.on('error', () => {});
        s.write('GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ');
        // One byte every half second: each restarts an idle timeout.
        timers.push(setInterval(() => { if (!s.destroyed) s.write('a'); }, 500));
        socks.push(s);
    }
    // The worker takes them from its accept queue as it gets to them.
    for (const until = Date.now() + 10000; fdCount(worker) - before < 90 && Date.now() < until;) {
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(fdCount(worker) - before >= 90, 'the trickling connections are open');
    await allClosed(socks, 8000);
    const open = socks.filter((s) => !s.destroyed).length;
    assert.strictEqual(open, 0, `${open} trickling connections still open after 8 s`);
    await assertAnswered(d, 2000, 'a client beside the slow ones');
});

test('DNode lines that never end are cut at line_timeout', async (t) => {
    const d = await startDnoded({ config: { workers: 1, line_timeout: 2 } }, t);
    const [worker] = await d.waitWorkers(1);
    const socks = [];
    t.after(() => socks.forEach((s) => s.destroy()));
    const part = '{"method":"read","arguments":["' + 'x'.repeat(500000);
    for (let i = 0; i < 100; i++) {
        const s = await rawConnect(d.port);
        s.on('error', () => {});
        s.on('data', () => {});
        s.write(part); // and never the rest
        socks.push(s);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    const held = rssKb(worker);
    await allClosed(socks, 8000);
    const open = socks.filter((s) => !s.destroyed).length;
    assert.strictEqual(open, 0, `${open} connections with unended lines still open after 8 s`);
    await d.waitForLog(/not finished within line_timeout/);
    assert.ok(held > 0);
    await assertAnswered(d, 2000, 'a client beside the unended lines');
});
