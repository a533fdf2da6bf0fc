'use strict';
// One address opening connections until the worker has none left for
// anyone else: max_connections_per_ip caps what one address holds (on
// loopback only when connection_limit_exempt does not spare it).

const test = require('node:test');
const assert = require('node:assert');

const { startDnoded } = require('../lib/harness');
const { assertAnswered, rawConnect } = require('../lib/hostile');

// Resolves true when the server closes sock within ms, else false.
function closedWithin(sock, ms) {
    return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), ms);
        sock.once('close', () => {
            clearTimeout(timer);
            resolve(true);
        });
    });
}

test('max_connections_per_ip: one address cannot take every connection', async (t) => {
    const d = await startDnoded({
        config: { workers: 1, max_connections_per_ip: 5, connection_limit_exempt: '' },
    }, t);
    const socks = [];
    t.after(() => socks.forEach((s) => s.destroy()));
    for (let i = 0; i < 5; i++) {
        const s = await rawConnect(d.port);
        s.on('error', () => {});
        s.on('data', () => {});
        socks.push(s);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000)); // all accepted
    const extra = await rawConnect(d.port);
    extra.on('error', () => {});
    socks.push(extra);
    // Closed at accept; the bound only allows for a loaded machine.
    assert.ok(await closedWithin(extra, 10000), 'the sixth connection is closed at once');
    await d.waitForLog(/max_connections_per_ip reached/);
    // Once one of them goes, the address may connect again.
    socks[0].destroy();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await assertAnswered(d, 2000, 'a client of the same address after one left');
});
