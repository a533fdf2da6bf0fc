'use strict';
// idempotency: what opt.requestId costs a write. Starts its own FerretDB
// (or uses DNODED_TEST_MONGODB_URI) and one dnoded (workers = 1), then
// times sequential creates from one connection: without a requestId, with
// a fresh one, and with a fresh one sent twice (the second a retry that
// is answered from dnoded_requests). Rounds alternate so that the
// collection grows under all three alike.
//   DNODED_BIN=build/dnoded node bench/idempotency.js [CREATES_PER_ROUND] [ROUNDS]
// Prints one line per round and kind: microseconds per create (per pair
// for the retry), and how many documents dnoded_requests held.

const crypto = require('node:crypto');
const path = require('node:path');

const lib = path.join(__dirname, '..', 'tests', 'lib');
const { startDnoded } = require(path.join(lib, 'harness'));
const { getServices } = require(path.join(lib, 'services'));
const { MongoConnection } = require(path.join(lib, 'mongo'));

const [n = 200, rounds = 3] = process.argv.slice(2).map(Number);

function create(c, data, opt) {
    return new Promise((resolve, reject) => {
        c.call('create', data, { ...opt, error: (e) => reject(new Error(JSON.stringify(e))) },
            resolve);
    });
}

async function main() {
    const services = await getServices({ redis: false, label: 'bench_idempotency' });
    const d = await startDnoded({ services });
    const db = await MongoConnection.connect(services.mongodbUri);
    const c = await d.connect();
    await c.ready;
    const kinds = {
        'no requestId': async (i) => create(c, { title: `p${i}` }, { type: 'todo' }),
        requestId: async (i) => create(c, { title: `i${i}` },
            { type: 'todo', requestId: crypto.randomUUID() }),
        'requestId + retry': async (i) => {
            const opt = { type: 'todo', requestId: crypto.randomUUID() };
            await create(c, { title: `r${i}` }, opt);
            await create(c, { title: `r${i}` }, opt);
        },
    };
    try {
        for (let r = 0; r < rounds; r++) {
            for (const [kind, one] of Object.entries(kinds)) {
                const t0 = process.hrtime.bigint();
                for (let i = 0; i < n; i++) {
                    await one(i);
                }
                const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
                const held = (await db.command({ count: 'dnoded_requests' })).n;
                console.log(`round ${r + 1} ${kind.padEnd(18)} ${us.toFixed(0).padStart(7)} us ` +
                    `(dnoded_requests: ${held})`);
            }
        }
    } finally {
        c.close();
        await db.dropDatabase().catch(() => {});
        db.close();
        await d.close();
        await services.close();
    }
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
