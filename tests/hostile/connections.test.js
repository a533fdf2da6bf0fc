'use strict';
// One address opening connections until the worker has none left for
// anyone else: max_connections_per_ip caps what one address holds, and
// max_connection_rate_per_ip how fast it may open new ones (on loopback
// only when connection_limit_exempt does not spare it).

const test = require('node:test');
const assert = require('node:assert');

const { startDnoded } = require('../lib/harness');
const { assertAnswered, rawConnect } = require('../lib/hostile');

test('max_connections_per_ip: one address cannot take every connection', async (t) => {
    const d = await startDnoded({
        config: { workers: 1, max_connections_per_ip: 5, connection_limit_exempt: '' },
    }, t);
    const socks = [];
    t.after(() => socks.forEach((s) => s.destroy()));
    for (let i = 0; i < 8; i++) {
        const s = await rawConnect(d.port);
        s.on('error', () => {});
        s.on('data', () => {});
        s.once('close', () => { s.refused = true; });
        socks.push(s);
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // Refusals happen at accept; the wait only allows for a loaded machine.
    for (const until = Date.now() + 10000; socks.filter((s) => s.refused).length < 3 &&
        Date.now() < until;) {
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const open = socks.filter((s) => !s.refused).length;
    // At most five; one fewer when the harness's own probe of the port
    // was still being closed as these arrived.
    assert.ok(open <= 5 && open >= 4, `${open} of 8 connections of one address stay open`);
    await d.waitForLog(/max_connections_per_ip reached/);
    // Once one of them goes, the address may connect again.
    socks.find((s) => !s.refused).destroy();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await assertAnswered(d, 5000, 'a client of the same address after one left');
});

test('max_connection_rate_per_ip: one address reconnecting in a loop is refused at accept', async (t) => {
    const d = await startDnoded({
        config: { workers: 1, max_connection_rate_per_ip: 5, connection_limit_exempt: '' },
    }, t);
    // The harness's probe of the port took one token; 40 at once: about
    // the remaining burst of 10 are served, the rest closed at accept.
    const results = await Promise.all(Array.from({ length: 40 }, async () => {
        const s = await rawConnect(d.port);
        s.on('error', () => {});
        s.write('{"method":"methods","arguments":[{}],"callbacks":{}}\n');
        return new Promise((resolve) => {
            s.once('data', () => { s.destroy(); resolve('served'); });
            s.once('close', () => resolve('refused'));
        });
    }));
    const served = results.filter((r) => r === 'served').length;
    assert.ok(served >= 5 && served <= 12, `${served} of 40 connections served`);
    await d.waitForLog(/max_connection_rate_per_ip reached/);
    // Tokens come back at the rate: a second later the address is served.
    await new Promise((resolve) => setTimeout(resolve, 1200));
    await assertAnswered(d, 5000, 'a client of the same address a second later');
});

test('max_connection_rate_per_ip spares connection_limit_exempt addresses', async (t) => {
    const d = await startDnoded({ config: { workers: 1, max_connection_rate_per_ip: 1 } }, t);
    for (let i = 0; i < 20; i++) {
        await assertAnswered(d, 5000, `loopback client ${i}`);
    }
    assert.doesNotMatch(d.stderr(), /max_connection_rate_per_ip reached/);
});
