'use strict';
// Hostile reads: a read whose answer would be huge. The worker builds an
// answer whole before queueing it, so past max_reply_bytes the read is
// refused with an error naming the limit, and nothing is built.

const test = require('node:test');
const assert = require('node:assert');

const { startDnoded } = require('../lib/harness');
const { getServices } = require('../lib/services');
const { findProgram } = require('../lib/proc');
const { RSS_SCALE, rssKb, peakRssKb, assertAnswered } = require('../lib/hostile');

const skip = process.env.DNODED_TEST_MONGODB_URI || findProgram('ferretdb', 'DNODED_TEST_FERRETDB')
    ? false : 'needs ferretdb (scripts/setup) or DNODED_TEST_MONGODB_URI';

const MODELS = { blob: { fields: { body: 'String', batch: 'String' } } };

// method(...args, opt) with opt.error: resolves { doc } or { error }.
function call(c, method, ...args) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to ${method}`)), 60000);
        const done = (v) => {
            clearTimeout(timer);
            resolve(v);
        };
        const opt = { ...args[args.length - 1], error: (error) => done({ error }) };
        c.call(method, ...args.slice(0, -1), opt, (doc) => done({ doc }));
    });
}

test('a read past max_reply_bytes is refused, naming the limit, and never held whole',
    { skip }, async (t) => {
        const { MongoConnection } = require('../lib/mongo');
        const services = await getServices({ redis: false });
        t.after(() => services.close());
        const d = await startDnoded({
            services, models: MODELS, config: { workers: 1, db_threads: 4, max_reply_bytes: '2m' },
        }, t);
        const db = await MongoConnection.connect(services.mongodbUri);
        t.after(() => db.close());
        const batch = `b${process.pid}${Date.now()}`;
        const body = 'x'.repeat(100000);
        for (let i = 0; i < 8; i++) { // 400 documents, 40 MB stored
            await db.insert('blobs', Array.from({ length: 50 }, () => ({ body, batch })));
        }
        const c = await d.connect();
        t.after(() => c.close());
        const [worker] = d.workerPids();
        const before = rssKb(worker);
        // Four at once, each asking for all 400 (within max_read_limit).
        const reads = [];
        for (let i = 0; i < 4; i++) {
            reads.push(call(c, 'read', { type: 'blob', query: { batch } }));
        }
        for (const r of await Promise.all(reads)) {
            assert.ok(r.error, 'the read is refused');
            assert.strictEqual(r.error.name, 'InvalidRequest');
            assert.match(r.error.message, /max_reply_bytes \(2097152 bytes\)/);
        }
        // The worker's peak: four answers of 40 MB were never built, and
        // what the database sent was read a bounded batch at a time.
        const grown = peakRssKb(worker) - before;
        t.diagnostic(`worker peak RSS grew ${grown} KiB`);
        assert.ok(grown < 48 * 1024 * RSS_SCALE, `worker peak RSS grew ${grown} KiB`);
        // Fewer documents fit.
        const few = await call(c, 'read', { type: 'blob', query: { batch }, sorting: { limit: 5 } });
        assert.strictEqual(few.doc.length, 5);
        await assertAnswered(d, 2000);
    });

test('one session\'s backlog of slow reads does not hold up another\'s', { skip }, async (t) => {
    const { MongoConnection } = require('../lib/mongo');
    const services = await getServices({ redis: false });
    t.after(() => services.close());
    const d = await startDnoded({
        services, models: MODELS, config: { workers: 1, db_threads: 2 },
    }, t);
    const db = await MongoConnection.connect(services.mongodbUri);
    t.after(() => db.close());
    const batch = `slow${process.pid}${Date.now()}`;
    const body = 'y'.repeat(2000);
    for (let i = 0; i < 6; i++) {
        await db.insert('blobs', Array.from({ length: 500 }, () => ({ body, batch })));
    }
    const probe = await d.connect();
    t.after(() => probe.close());
    const mine = ok(await call(probe, 'create', { body: 'mine', batch: 'probe' }, { type: 'blob' }));

    // 100 reads that scan every document (an unanchored regex), pipelined.
    const attacker = await d.connect();
    t.after(() => attacker.close());
    const slow = [];
    for (let i = 0; i < 100; i++) {
        slow.push(call(attacker, 'read', { type: 'blob', query: { body: { $regex: 'z' } } })
            .catch(() => {}));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = Date.now();
    const r = await call(probe, 'read', { type: 'blob', query: { _id: mine._id } });
    const waited = Date.now() - started;
    t.diagnostic(`the other session's read waited ${waited} ms`);
    assert.ok(r.doc, JSON.stringify(r.error));
    assert.ok(waited < 2000, `the other session's read waited ${waited} ms`);
    attacker.close();
    await Promise.race([Promise.all(slow), new Promise((resolve) => setTimeout(resolve, 1000))]);
});

function ok(r) {
    assert.ok(r.doc, JSON.stringify(r.error));
    return r.doc;
}
