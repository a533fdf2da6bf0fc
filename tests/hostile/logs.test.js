'use strict';
// Hostile clients and the log: every log line a client can cause is
// rate-limited (per connection and per worker), and a session that keeps
// sending messages that are refused is disconnected after
// max_invalid_messages in a minute. Before, 1 MB of "x\n" lines wrote
// 186 MB of log in 2 s, and a client without an error method was never
// slowed down.

const test = require('node:test');
const assert = require('node:assert');

const { startDnoded } = require('../lib/harness');
const { logBytes, assertAnswered, rawConnect } = require('../lib/hostile');

test('1 MB of junk lines from one client: disconnected, the log stays small', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t);
    await d.waitForLog(/serving/);
    const before = logBytes(d);
    const sock = await rawConnect(d.port);
    t.after(() => sock.destroy());
    sock.on('error', () => {});
    sock.on('data', () => {});
    const closed = new Promise((resolve) => sock.once('close', resolve));
    sock.write('x\n'.repeat(524288));
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 10000))]);
    assert.ok(sock.destroyed || sock.readableEnded, 'the junk sender was disconnected');
    await d.waitForLog(/too many invalid messages/);
    await assertAnswered(d, 2000, 'a client beside the junk sender');
    const grown = logBytes(d) - before;
    t.diagnostic(`the log grew by ${grown} bytes`);
    assert.ok(grown < 64 * 1024, `the log grew by ${grown} bytes`);
});

test('junk from 300 clients at once: the worker logs a bounded number of lines', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t);
    await d.waitForLog(/serving/);
    const before = logBytes(d);
    const socks = [];
    t.after(() => socks.forEach((s) => s.destroy()));
    for (let i = 0; i < 300; i++) {
        const s = await rawConnect(d.port);
        s.on('error', () => {});
        s.on('data', () => {});
        socks.push(s);
    }
    // Each stays under max_invalid_messages; together they send 15,000.
    for (const s of socks) s.write('{"method":"frobnicate"}\n'.repeat(50));
    await new Promise((resolve) => setTimeout(resolve, 2500));
    await assertAnswered(d, 2000, 'a client beside 300 junk senders');
    const grown = logBytes(d) - before;
    t.diagnostic(`the log grew by ${grown} bytes`);
    assert.ok(grown < 256 * 1024, `the log grew by ${grown} bytes`);
    await d.waitForLog(/log lines about clients held back/);
});
