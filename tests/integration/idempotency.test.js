'use strict';
// Idempotent writes (README.md, "The wire API": opt.requestId): a retried
// create, update or delete with the same requestId, by the same identity,
// answers what the first attempt answered and writes and publishes
// nothing more, on the same server or on another one sharing the
// database; a retry that finds the first still running waits for it;
// transient failures are not remembered; identities do not see each
// other's answers; a bad requestId is refused; idempotency_window = 0
// turns it off. Markers are looked at (and planted) in dnoded_requests.

const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startDnoded, sleep, timeScale } = require('../lib/harness');
const { getServices, startFerretDB } = require('../lib/services');
const { findProgram } = require('../lib/proc');
const { MongoConnection, ObjectId, withDatabase } = require('../lib/mongo');
const jwt = require('../lib/jwt');

const skip = process.env.DNODED_TEST_MONGODB_URI || findProgram('ferretdb', 'DNODED_TEST_FERRETDB')
    ? false : 'needs ferretdb (scripts/setup) or DNODED_TEST_MONGODB_URI';

const CALL_TIMEOUT_MS = 20000 * timeScale;
const REQUESTS = 'dnoded_requests';

const MODELS = {
    item: {
        collection: 'items',
        push_options: ['requestId', 'extra'],
        fields: {
            title: { type: 'String', required: true, maxlength: 40 },
            batch: { type: 'String', index: true },
            count: { type: 'Number', min: 0, default: 0 },
        },
    },
    slow: {
        // a collection big enough that FerretDB (which scans it for every
        // read and update by _id) takes a while over an update
        collection: 'slows',
        fields: { title: 'String', n: 'Number' },
    },
    note: {
        versioned: true,
        fields: {
            text: { type: 'String', required: true },
            batch: 'String',
        },
    },
};

const SECRET = crypto.randomBytes(40).toString('hex');

let services;
let keyDir;
let a; // dnoded, 2 workers
let b; // a second dnoded on the same database (another host); short db timeouts
let db;

test.before(async () => {
    if (skip) {
        return;
    }
    services = await getServices({ redis: false });
    keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-idem-'));
    fs.writeFileSync(path.join(keyDir, 'key'), `${SECRET}\n`);
    const config = { auth_key: path.join(keyDir, 'key') };
    a = await startDnoded({ services, models: MODELS, config: { ...config, workers: 2 } });
    // db_max_time_ms + db_timeout_ms bound how long a retry waits for a
    // running first attempt: 3 s here.
    b = await startDnoded({ services, models: MODELS,
        config: { ...config, db_max_time_ms: 2000, db_timeout_ms: 1000 } });
    db = await MongoConnection.connect(services.mongodbUri);
});

test.after(async () => {
    try {
        if (db) {
            await db.dropDatabase().catch(() => {});
            db.close();
        }
        for (const d of [a, b]) {
            if (d) {
                await d.close();
            }
        }
    } finally {
        if (keyDir) {
            fs.rmSync(keyDir, { recursive: true, force: true });
        }
        if (services) {
            await services.close();
        }
    }
});

// A connected client recording pushes; sub: authenticate as sub first.
async function client(t, { server = a, sub = null } = {}) {
    const c = await server.pushClient(t, { timeoutMs: CALL_TIMEOUT_MS });
    if (sub !== null) {
        const [err] = await c.invoke('auth', jwt.sign(jwt.claims({ sub }), SECRET));
        assert.strictEqual(err, null, JSON.stringify(err));
    }
    return c;
}

// method(...args, opt) with opt.error: resolves { doc } or { error }.
function call(c, method, ...args) {
    return c.answer(method, args, CALL_TIMEOUT_MS);
}

const ok = (r) => {
    assert.ok(r.error === undefined, `unexpected error: ${JSON.stringify(r.error)}`);
    return r.doc;
};
const refused = (r, name) => {
    assert.ok(r.error !== undefined, `expected ${name}, got ${JSON.stringify(r.doc)}`);
    assert.strictEqual(r.error.name, name, JSON.stringify(r.error));
    return r.error;
};

const rid = () => `r-${crypto.randomUUID()}`;
const pushes = (c, name) => c.received.filter((m) => m.name === name);

async function subscribe(c, url) {
    assert.deepStrictEqual(await c.invoke('subscribe', url), [null]);
}

// The marker's _id as store.c makes it: SHA-256 of the length-prefixed
// parts, in hex.
function markerKey(scope, method, type, requestId) {
    const h = crypto.createHash('sha256');
    for (const part of ['dnoded-request-1', scope, method, type, requestId]) {
        const b = Buffer.from(part, 'utf8');
        const len = Buffer.alloc(4);
        len.writeUInt32BE(b.length);
        h.update(len);
        h.update(b);
    }
    return h.digest('hex');
}

// ------------------------------------------------------------------ retries

test('a retried create stores one document and answers the first answer again; one push',
    { skip }, async (t) => {
        const sub = await client(t);
        await subscribe(sub, '/idem/create');
        const c = await client(t);
        const id = rid();
        const opt = { type: 'item', url: '/idem/create', requestId: id };
        const first = ok(await call(c, 'create', { title: 'once', batch: 'create' }, opt));
        const again = ok(await call(c, 'create', { title: 'once', batch: 'create' }, opt));
        assert.deepStrictEqual(again, first);
        // from another connection (a reconnected client) too
        const c2 = await client(t);
        assert.deepStrictEqual(ok(await call(c2, 'create', { title: 'once', batch: 'create' },
            opt)), first);
        assert.strictEqual((await db.find('items', { batch: 'create' })).length, 1);

        const [doc, pushed] = await sub.nextCall('created');
        assert.deepStrictEqual(doc, first);
        assert.ok(!('requestId' in pushed), `requestId is never pushed: ${JSON.stringify(pushed)}`);
        await sleep(300);
        assert.strictEqual(pushes(sub, 'created').length, 1);

        // The claim and the answer, keyed by scope/method/type/id.
        const key = markerKey('a', 'create', 'item', id);
        const [claim] = await db.find(REQUESTS, { _id: key });
        const [answer] = await db.find(REQUESTS, { _id: `${key}/a` });
        assert.ok(claim && answer, 'a claim and an answer in dnoded_requests');
        assert.strictEqual(answer.o, claim.o);
        assert.strictEqual(answer.ok, true);
        assert.deepStrictEqual(JSON.parse(answer.r), first);
        assert.ok(claim.lease > claim.at);
        assert.strictEqual(answer.until - claim.at, 600 * 1000,
            'kept for idempotency_window (600 s)');
        assert.strictEqual(claim.until - claim.at, 600 * 1000);
    });

test('a retry on another dnoded sharing the database answers the first answer', { skip },
    async (t) => {
        const ca = await client(t, { server: a, sub: 'ann' });
        const cb = await client(t, { server: b, sub: 'ann' });
        const id = rid();
        const opt = { type: 'item', requestId: id };
        const first = ok(await call(ca, 'create', { title: 'hosts', batch: 'hosts' }, opt));
        assert.deepStrictEqual(ok(await call(cb, 'create', { title: 'hosts', batch: 'hosts' },
            opt)), first);
        assert.strictEqual((await db.find('items', { batch: 'hosts' })).length, 1);

        // Both at once, many times: each id stores one document, and both
        // servers answer it.
        const ids = Array.from({ length: 12 }, rid);
        const answers = await Promise.all(ids.flatMap((r) => [ca, cb].map((c) =>
            call(c, 'create', { title: r.slice(0, 20), batch: 'race' },
                { type: 'item', requestId: r }))));
        for (let i = 0; i < ids.length; i++) {
            const x = ok(answers[2 * i]);
            const y = ok(answers[2 * i + 1]);
            assert.deepStrictEqual(x, y, `both answers of ${ids[i]}`);
        }
        assert.strictEqual((await db.find('items', { batch: 'race' })).length, ids.length);
    });

test('a retried update or delete writes and publishes once', { skip }, async (t) => {
    const sub = await client(t);
    await subscribe(sub, '/idem/ud');
    const c = await client(t);
    const base = { type: 'item', url: '/idem/ud' };
    const doc = ok(await call(c, 'create', { title: 'to update', batch: 'ud' }, base));
    await sub.nextCall('created');

    const uid = rid();
    const change = { _id: doc._id, count: 5 };
    const updated = ok(await call(c, 'update', change, { ...base, requestId: uid }));
    assert.strictEqual(updated.__v, 1);
    const again = ok(await call(c, 'update', change, { ...base, requestId: uid }));
    assert.deepStrictEqual(again, updated);
    const [row] = await db.find('items', { _id: new ObjectId(doc._id) });
    assert.strictEqual(row.__v, 1, 'saved once');
    await sub.nextCall('updated');

    const did = rid();
    const removed = ok(await call(c, 'delete', { _id: doc._id }, { ...base, requestId: did }));
    assert.deepStrictEqual(ok(await call(c, 'delete', { _id: doc._id },
        { ...base, requestId: did })), removed, 'not NotFound: the first answer');
    await sub.nextCall('deleted');
    await sleep(300);
    assert.strictEqual(pushes(sub, 'updated').length, 1);
    assert.strictEqual(pushes(sub, 'deleted').length, 1);
});

test('the same requestId for another method or model is another request', { skip },
    async (t) => {
        const c = await client(t);
        const id = rid();
        const doc = ok(await call(c, 'create', { title: 'm1', batch: 'methods' },
            { type: 'item', requestId: id }));
        const up = ok(await call(c, 'update', { _id: doc._id, title: 'm2' },
            { type: 'item', requestId: id }));
        assert.strictEqual(up.title, 'm2');
        const note = ok(await call(c, 'create', { text: 'n', batch: 'methods' },
            { type: 'note', requestId: id }));
        assert.strictEqual(note.text, 'n');
    });

test('an error about the request is answered again; the retry does not run', { skip },
    async (t) => {
        const c = await client(t);
        const id = rid();
        const opt = { type: 'item', requestId: id };
        const first = refused(await call(c, 'create', { batch: 'invalid' }, opt),
            'ValidationError');
        // Even with data that would pass now: the answer is the first's.
        const again = refused(await call(c, 'create', { title: 'valid now', batch: 'invalid' },
            opt), 'ValidationError');
        assert.deepStrictEqual(again, first);
        assert.strictEqual((await db.find('items', { batch: 'invalid' })).length, 0);

        // NotFound and Conflict alike
        const gone = '5f1d7c2e9b1e8a3d4c5b6a79';
        const nf = rid();
        const e1 = refused(await call(c, 'delete', { _id: gone }, { type: 'item', requestId: nf }),
            'NotFound');
        assert.deepStrictEqual(refused(await call(c, 'delete', { _id: gone },
            { type: 'item', requestId: nf }), 'NotFound'), e1);
        const note = ok(await call(c, 'create', { text: 'v0' }, { type: 'note' }));
        ok(await call(c, 'update', { _id: note._id, __v: 0, text: 'v1' }, { type: 'note' }));
        const cf = rid();
        const stale = { _id: note._id, __v: 0, text: 'stale' };
        const e2 = refused(await call(c, 'update', stale, { type: 'note', requestId: cf }),
            'Conflict');
        assert.deepStrictEqual(refused(await call(c, 'update', stale,
            { type: 'note', requestId: cf }), 'Conflict'), e2);
    });

test('identities do not share answers', { skip }, async (t) => {
    const ann = await client(t, { sub: 'ann' });
    const bob = await client(t, { sub: 'bob' });
    const anon = await client(t);
    const id = rid();
    const opt = { type: 'item', requestId: id };
    const x = ok(await call(ann, 'create', { title: 'ann', batch: 'who' }, opt));
    const y = ok(await call(bob, 'create', { title: 'bob', batch: 'who' }, opt));
    const z = ok(await call(anon, 'create', { title: 'anon', batch: 'who' }, opt));
    assert.notStrictEqual(x._id, y._id);
    assert.notStrictEqual(x._id, z._id);
    assert.strictEqual(y.title, 'bob');
    assert.strictEqual(z.title, 'anon');
    assert.strictEqual((await db.find('items', { batch: 'who' })).length, 3);
    // ann's retry, from the other host, is still ann's
    const ann2 = await client(t, { server: b, sub: 'ann' });
    assert.deepStrictEqual(ok(await call(ann2, 'create', { title: 'ann', batch: 'who' }, opt)), x);
});

test('a bad requestId is refused with InvalidRequest and nothing is written', { skip },
    async (t) => {
        const c = await client(t);
        const bad = [7, '', 'x'.repeat(129), 'tab\there', 'caf\u00e9', null, { a: 1 }, ['x']];
        for (const requestId of bad) {
            const e = refused(await call(c, 'create', { title: 'bad id', batch: 'badid' },
                { type: 'item', requestId }), 'InvalidRequest');
            assert.match(e.message, /requestId/, JSON.stringify(requestId));
        }
        assert.strictEqual((await db.find('items', { batch: 'badid' })).length, 0);
        // the longest and the oddest accepted
        ok(await call(c, 'create', { title: 'long id', batch: 'goodid' },
            { type: 'item', requestId: 'x'.repeat(128) }));
        ok(await call(c, 'create', { title: 'odd id', batch: 'goodid' },
            { type: 'item', requestId: ' !"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~' }));
    });

// ------------------------------------------------------- a running attempt

test('a retry while the first attempt runs waits for its answer', { skip }, async (t) => {
    // The first attempt, seen from the database: a running marker of
    // another host, answered 600 ms later.
    const c = await client(t, { sub: 'carl' });
    const id = rid();
    const key = markerKey('u:carl', 'create', 'item', id);
    const now = Date.now();
    await db.insert(REQUESTS, [{ _id: key, o: 'elsewhere', at: new Date(now),
        lease: new Date(now + 60000), until: new Date(now + 600000) }]);
    const answer = { _id: '5f1d7c2e9b1e8a3d4c5b6a7a', title: 'from the first', batch: 'flight',
        count: 0, __v: 0 };
    const started = Date.now();
    const pending = call(c, 'create', { title: 'from the retry', batch: 'flight' },
        { type: 'item', requestId: id });
    await sleep(600);
    await db.insert(REQUESTS, [{ _id: `${key}/a`, o: 'elsewhere', ok: true,
        r: JSON.stringify(answer), until: new Date(now + 600000) }]);
    assert.deepStrictEqual(ok(await pending), answer);
    assert.ok(Date.now() - started >= 500, 'it waited');
    assert.strictEqual((await db.find('items', { batch: 'flight' })).length, 0, 'nothing written');

    // Through dnoded itself: both at once on the two hosts (above, 'race')
    // is the same path whenever the second claim arrives first.
});

test('through dnoded: a retry on another worker while a slow update runs waits for it and ' +
    'answers its result; one write, one push', { skip }, async (t) => {
    const d = await startDnoded({ services, models: MODELS,
        config: { workers: 2, log_level: 'debug' } }, t);
    const [w1, w2] = await d.waitWorkers(2);
    const on = (w) => d.withOnlyWorker(w, () => client(t, { server: d }));
    const sub = await on(w1);
    const c1 = await on(w1);
    const c2 = await on(w2);
    await subscribe(sub, '/idem/slow');
    // Without MongoDB's _id index (FerretDB 1.24 scans), this many
    // documents make each update take tens of milliseconds; on MongoDB
    // the race below is merely tighter.
    for (let i = 0; i < 10; i++) {
        await db.insert('slows', Array.from({ length: 500 }, (_, k) => ({ n: i * 500 + k })));
    }
    const doc = ok(await call(c1, 'create', { title: 'slow', n: -1 }, { type: 'slow' }));
    for (let round = 0; round < 3; round++) {
        const id = rid();
        const opt = { type: 'slow', url: '/idem/slow', requestId: id };
        const change = { _id: doc._id, n: round };
        const [x, y] = await Promise.all([call(c1, 'update', change, opt),
            call(c2, 'update', change, opt)]);
        assert.deepStrictEqual(ok(y), ok(x));
        assert.strictEqual(ok(x).__v, round + 1, 'saved once');
        await sub.nextCall('updated');
    }
    await sleep(300);
    assert.strictEqual(pushes(sub, 'updated').length, 3);
    // On FerretDB the updates are slow enough that the second of each pair
    // always finds the first running; MongoDB may finish one first.
    const info = await db.command({ buildInfo: 1 }, 'admin');
    if (info.ferretdbVersion) {
        assert.match(d.stderr(), /waits for its first attempt/, 'a retry waited');
    }
});

test('a first attempt that does not finish makes the retry answer Unavailable; an abandoned ' +
    'one is taken over', { skip }, async (t) => {
    const c = await client(t, { server: b, sub: 'dora' });
    const id = rid();
    const key = markerKey('u:dora', 'create', 'item', id);
    const now = Date.now();
    await db.insert(REQUESTS, [{ _id: key, o: 'stuck', at: new Date(now),
        lease: new Date(now + 60000), until: new Date(now + 600000) }]);
    const started = Date.now();
    const e = refused(await call(c, 'create', { title: 'stuck', batch: 'stuck' },
        { type: 'item', requestId: id }), 'Unavailable');
    const waited = Date.now() - started;
    assert.match(e.message, /still running/);
    assert.ok(waited >= 2500, `waited db_max_time_ms + db_timeout_ms (3 s): ${waited} ms`);
    assert.strictEqual((await db.find('items', { batch: 'stuck' })).length, 0);

    // Past its lease (a crash left it): the retry runs the write.
    await db.command({ update: REQUESTS, updates: [{ q: { _id: key },
        u: { $set: { lease: new Date(Date.now() - 1000) } } }] });
    const doc = ok(await call(c, 'create', { title: 'stuck', batch: 'stuck' },
        { type: 'item', requestId: id }));
    assert.strictEqual(doc.title, 'stuck');
    assert.strictEqual((await db.find('items', { batch: 'stuck' })).length, 1);
    const [claim] = await db.find(REQUESTS, { _id: key });
    const [answer] = await db.find(REQUESTS, { _id: `${key}/a` });
    assert.notStrictEqual(claim.o, 'stuck');
    assert.deepStrictEqual(JSON.parse(answer.r), doc);
});

test('a retry waiting at a stop: answered before a graceful stop ends, cleanly dropped by a ' +
    'fast one', { skip }, async (t) => {
    for (const sig of ['SIGQUIT', 'SIGTERM']) {
        const d = await startDnoded({ services, models: MODELS,
            config: { db_max_time_ms: 2000, db_timeout_ms: 1000 } }, t);
        const c = await client(t, { server: d });
        const id = rid();
        const now = Date.now();
        await db.insert(REQUESTS, [{ _id: markerKey('a', 'create', 'item', id), o: 'stuck',
            at: new Date(now), lease: new Date(now + 60000), until: new Date(now + 600000) }]);
        const answer = call(c, 'create', { title: 'at stop', batch: 'stop' },
            { type: 'item', requestId: id }).catch((err) => ({ lost: err }));
        await sleep(300);
        const exited = d.waitExit(); // the exit is ours
        d.signal(sig);
        const r = await answer;
        if (sig === 'SIGQUIT') {
            assert.match(refused(r, 'Unavailable').message, /still running/);
        } else {
            assert.ok(r.lost || (r.error && r.error.name === 'Unavailable'), JSON.stringify(r));
        }
        await exited;
        await d.stop(); // exit status 0, no sanitizer report, nothing left behind
    }
    assert.strictEqual((await db.find('items', { batch: 'stop' })).length, 0);
});

test('an answer past its window is forgotten', { skip }, async (t) => {
    const c = await client(t);
    const id = rid();
    const opt = { type: 'item', requestId: id };
    ok(await call(c, 'create', { title: 'old', batch: 'expired' }, opt));
    const key = markerKey('a', 'create', 'item', id);
    const past = new Date(Date.now() - 1000);
    await db.command({ update: REQUESTS, updates: [
        { q: { _id: key }, u: { $set: { until: past, lease: past } } },
        { q: { _id: `${key}/a` }, u: { $set: { until: past } } }] });
    const again = ok(await call(c, 'create', { title: 'old', batch: 'expired' }, opt));
    assert.strictEqual((await db.find('items', { batch: 'expired' })).length, 2);
    // and that second answer is the one kept now
    assert.deepStrictEqual(ok(await call(c, 'create', { title: 'old', batch: 'expired' }, opt)),
        again);
});

// ---------------------------------------------------- transient and off

test('a transient failure is not remembered: the retry runs', { skip }, async (t) => {
    const ferret = await startFerretDB();
    t.after(() => ferret.close());
    const uri = withDatabase(ferret.uri, 'idem_transient');
    const d = await startDnoded({ mongodbUri: uri, models: MODELS,
        config: { db_timeout_ms: 1000, db_max_time_ms: 2000 } }, t);
    const c = await client(t, { server: d });
    await ferret.stop({ sig: 'SIGKILL' });
    const id = rid();
    const opt = { type: 'item', requestId: id };
    refused(await call(c, 'create', { title: 'later', batch: 'transient' }, opt), 'Unavailable');
    await ferret.start();
    let doc;
    for (let i = 0; i < 40 && !doc; i++) {
        const r = await call(c, 'create', { title: 'later', batch: 'transient' }, opt);
        if (r.error && r.error.name === 'Unavailable') {
            await sleep(250);
            continue;
        }
        doc = ok(r);
    }
    assert.ok(doc, 'the retry ran once the database was back');
    const conn = await MongoConnection.connect(uri);
    try {
        assert.strictEqual((await conn.find('items', { batch: 'transient' })).length, 1);
    } finally {
        conn.close();
    }
});

test('a window shorter than a lease: past it, a retry is a new request at once', { skip },
    async (t) => {
        const d = await startDnoded({ services, models: MODELS,
            config: { idempotency_window: 1 } }, t);
        const c = await client(t, { server: d });
        const opt = { type: 'item', requestId: rid() };
        const x = ok(await call(c, 'create', { title: 'short', batch: 'short' }, opt));
        assert.deepStrictEqual(ok(await call(c, 'create', { title: 'short', batch: 'short' }, opt)),
            x);
        await sleep(1200);
        const started = Date.now();
        const y = ok(await call(c, 'create', { title: 'short', batch: 'short' }, opt));
        assert.notStrictEqual(y._id, x._id);
        assert.ok(Date.now() - started < 2000, 'not held behind the first attempt\'s lease');
        assert.strictEqual((await db.find('items', { batch: 'short' })).length, 2);
    });

test('an answer too large to keep is not copied into dnoded_requests: a retry is told the ' +
    'request was done', { skip }, async (t) => {
    const d = await startDnoded({ services, models: MODELS,
        config: { max_message_size: '4m', max_reply_bytes: '8m' } }, t);
    const c = await client(t, { server: d });
    const opt = { type: 'slow', requestId: rid() };
    const title = `big ${crypto.randomUUID()} ${'x'.repeat(1100 * 1024)}`;
    const first = ok(await call(c, 'create', { title }, opt));
    const err = refused(await call(c, 'create', { title }, opt), 'Conflict');
    assert.match(err.message, /done already.*too large to keep/);
    assert.strictEqual((await db.find('slows', { title })).length, 1, 'written once');
    const kept = (await db.find(REQUESTS, {})).filter((m) => typeof m.r === 'string' &&
        (m.r.includes(first._id) || m.r.includes(opt.requestId)));
    assert.strictEqual(kept.length, 1, 'one answer kept for the request');
    assert.strictEqual(kept[0].ok, false);
    assert.ok(kept[0].r.length < 1024, `no megabyte copy kept (${kept[0].r.length} bytes)`);
});

test('idempotency_window = 0 remembers nothing', { skip }, async (t) => {
    const d = await startDnoded({ services, models: MODELS,
        config: { idempotency_window: 0 } }, t);
    const c = await client(t, { server: d });
    const id = rid();
    const opt = { type: 'item', requestId: id };
    const x = ok(await call(c, 'create', { title: 'off', batch: 'off' }, opt));
    const y = ok(await call(c, 'create', { title: 'off', batch: 'off' }, opt));
    assert.notStrictEqual(x._id, y._id);
    assert.strictEqual((await db.find('items', { batch: 'off' })).length, 2);
    const key = markerKey('a', 'create', 'item', id);
    assert.deepStrictEqual(await db.find(REQUESTS, { _id: { $in: [key, `${key}/a`] } }), []);
    // still checked
    refused(await call(c, 'create', { title: 'off', batch: 'off' }, { type: 'item', requestId: 5 }),
        'InvalidRequest');
});
