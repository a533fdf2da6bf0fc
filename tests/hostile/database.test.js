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
    return c.answer(method, args, 60000);
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

// Resolves once every thread of pid is stopped: a signal reaches a busy
// thread only when the kernel next schedules it.
async function stopped(pid) {
    const fs = require('node:fs');
    for (let i = 0; i < 500; i++) {
        const states = fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
            const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
            return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
        });
        if (states.every((s) => s === 'T')) {
            return;
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error(`process ${pid} did not stop`);
}

function ok(r) {
    assert.ok(r.doc, JSON.stringify(r.error));
    return r.doc;
}

// A database that stops answering mid-operation (frozen, or cut off without
// a reset) is the case the server cannot see at once: the operation fails
// as Unavailable after db_max_time_ms + db_timeout_ms, as documented, and
// the operations queued behind it fail at once rather than each waiting
// that long in turn; what does not touch the database is answered as usual.
test('a frozen database fails operations within the documented time', {
    // Its own FerretDB, whatever the other tests use: freezing a shared
    // server would stall them.
    skip: findProgram('ferretdb', 'DNODED_TEST_FERRETDB')
        ? false : 'needs ferretdb (scripts/setup) to start a private one to freeze',
}, async (t) => {
    const { startFerretDB } = require('../lib/services');
    const ferret = await startFerretDB();
    t.after(() => ferret.close());
    const d = await startDnoded({
        mongodbUri: `${ferret.uri}/hostile_frozen`, models: MODELS,
        config: { workers: 1, db_timeout_ms: 1000, db_max_time_ms: 1000 },
    }, t);
    const c = await d.connect();
    t.after(() => c.close());
    const mine = ok(await call(c, 'create', { body: 'before', batch: 'frozen' }, { type: 'blob' }));

    process.kill(ferret.proc.pid, 'SIGSTOP');
    await stopped(ferret.proc.pid);
    t.after(() => {
        try {
            process.kill(ferret.proc.pid, 'SIGCONT');
        } catch { /* gone */ }
    });
    const started = Date.now();
    const reads = [];
    for (let i = 0; i < 10; i++) {
        reads.push(call(c, 'read', { type: 'blob', query: { _id: mine._id } })
            .then((r) => ({ r, ms: Date.now() - started })));
    }
    await assertAnswered(d, 1000, 'a subscribe while the database is frozen');
    // db_max_time_ms + db_timeout_ms = 2 s, then the rest at once.
    for (const { r, ms } of await Promise.all(reads)) {
        assert.strictEqual(r.error && r.error.name, 'Unavailable', JSON.stringify(r));
        assert.ok(ms < 2000 + 1500, `a read answered after ${ms} ms`);
    }
    t.diagnostic(`the last read failed after ${Date.now() - started} ms`);

    process.kill(ferret.proc.pid, 'SIGCONT');
    let r;
    for (let i = 0; i < 50; i++) {
        r = await call(c, 'read', { type: 'blob', query: { _id: mine._id } });
        if (r.doc) {
            break;
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.strictEqual(ok(r).body, 'before');
});
