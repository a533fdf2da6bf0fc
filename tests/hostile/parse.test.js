'use strict';
// Hostile input to the parser: a message whose object keys were chosen to
// collide in a public hash. Before the index was keyed with a per-process
// secret (json.c), such keys could be computed offline for FNV-1a and sent
// as one message; finding duplicates then cost n^2/2 comparisons and held
// the worker for seconds. A well-behaved client on the same worker must
// stay answered while the attack runs.

const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');

const { startDnoded } = require('../lib/harness');
const { assertAnswered } = require('../lib/hostile');

// n distinct 12-character keys whose 64-bit FNV-1a hashes (as the old
// index computed them) agree in their low 18 bits, so they share a slot in any table of up to 2^18 slots. The
// low bits of FNV-1a depend only on the low bits of its state, so three
// 4-character blocks, each chosen among those that take the state to the
// same low bits, give |S1| x |S2| x |S3| such keys (about 800,000).
function collidingKeys(n) {
    const PRIME = 0x1b3; // the low 32 bits of FNV's 64-bit prime
    const M = (1 << 18) - 1;
    const A = Buffer.from('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-');
    const each = (state, fn) => {
        for (const a of A) {
            const ha = Math.imul(state ^ a, PRIME);
            for (const b of A) {
                const hb = Math.imul(ha ^ b, PRIME);
                for (const c of A) {
                    const hc = Math.imul(hb ^ c, PRIME);
                    for (const e of A) fn(Math.imul(hc ^ e, PRIME), a, b, c, e);
                }
            }
        }
    };
    // The low 32 bits of the offset basis json.c used (1469598103934665603,
    // a digit short of FNV's published one: public all the same).
    let state = 0x739d0383 | 0;
    const stages = [];
    for (let i = 0; i < 3; i++) {
        const count = new Uint16Array(1 << 18);
        let best = 0;
        let bestLow = 0;
        each(state, (h) => {
            const k = h & M;
            if (++count[k] > best) {
                best = count[k];
                bestLow = k;
            }
        });
        const blocks = [];
        let next = 0;
        each(state, (h, a, b, c, e) => {
            if ((h & M) === bestLow) {
                blocks.push(String.fromCharCode(a, b, c, e));
                next = h;
            }
        });
        stages.push(blocks);
        state = next;
    }
    const keys = [];
    for (const x of stages[0]) {
        for (const y of stages[1]) {
            for (const z of stages[2]) {
                keys.push(x + y + z);
                if (keys.length === n) return keys;
            }
        }
    }
    return keys;
}

test('keys that collide in a public hash do not hold the worker', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t);
    const keys = collidingKeys(50000);
    assert.strictEqual(new Set(keys).size, 50000);
    const obj = `{${keys.map((k) => `"${k}":1`).join(',')}}`;
    const line = `{"method":"subscribe","arguments":[${obj}],"callbacks":{},"links":[]}\n`;
    assert.ok(line.length < 1048576, 'under the default max_message_size');

    const attacker = net.connect(d.port, '127.0.0.1');
    t.after(() => attacker.destroy());
    await new Promise((resolve, reject) => {
        attacker.once('connect', resolve);
        attacker.once('error', reject);
    });
    attacker.on('error', () => {});
    attacker.on('data', () => {}); // whatever it is told, it keeps sending
    for (let i = 0; i < 3; i++) attacker.write(line);

    // Three such messages cost the old index tens of seconds of one core;
    // parsing them is now a matter of milliseconds each.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await assertAnswered(d, 3000, 'a client beside the hash-flooding one');
    await assertAnswered(d, 3000, 'a second client after the flood');
});
