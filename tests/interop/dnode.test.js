'use strict';
// The npm dnode package (1.2.2, {weak: false}), a client nobody here wrote,
// driving the real dnoded: the methods exchange, callbacks inside options
// and inside arrays, circular structures (sent as links), cull, pub/sub
// between two clients, and many concurrent clients.

const test = require('node:test');
const assert = require('node:assert');

let dnode = null;
try {
    dnode = require('dnode');
} catch (err) {
    dnode = null; // skipped below: the npm packages are not installed
}

const { startDnoded, timeScale } = require('../lib/harness');
const { getServices } = require('../lib/services');
const { findProgram } = require('../lib/proc');

const TIMEOUT = 10000 * timeScale;

const skip = !dnode ? 'the npm package dnode is not installed (scripts/setup)'
    : (process.env.DNODED_TEST_MONGODB_URI || findProgram('ferretdb', 'DNODED_TEST_FERRETDB'))
    && (process.env.DNODED_TEST_REDIS_URL || findProgram('redis-server', 'DNODED_TEST_REDIS_SERVER'))
        ? false : 'needs ferretdb and redis-server (scripts/setup) or DNODED_TEST_* servers';

let services;
let d;

test.before(async () => {
    if (skip) {
        return;
    }
    services = await getServices();
    assert.strictEqual(services.skip, null);
    d = await startDnoded({ services, config: { max_connections: 2000 } });
});

test.after(async () => {
    try {
        if (d) {
            await d.close();
        }
    } finally {
        if (services) {
            await services.close();
        }
    }
});

// A promise settled by the first call of the returned function, or
// rejected after ms.
function once(what, ms = TIMEOUT) {
    let fn;
    const p = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${what}: not called within ${ms} ms`)),
            ms);
        fn = (...args) => {
            clearTimeout(timer);
            resolve(args);
        };
    });
    p.catch(() => {});
    return { fn, p };
}

// Resolves with a channel of calls to fn: next() is the arguments of the
// next call not yet taken.
function recorder() {
    const calls = [];
    const waiting = [];
    const fn = (...args) => {
        calls.push(args);
        const w = waiting.shift();
        if (w) {
            w(calls.shift());
        }
    };
    fn.calls = calls;
    fn.all = [];
    const wrapped = (...args) => {
        fn.all.push(args);
        fn(...args);
    };
    wrapped.all = fn.all;
    wrapped.next = (ms = TIMEOUT) => new Promise((resolve, reject) => {
        if (calls.length > 0) {
            resolve(calls.shift());
            return;
        }
        const timer = setTimeout(() => reject(new Error(`no call within ${ms} ms`)), ms);
        waiting.push((a) => {
            clearTimeout(timer);
            resolve(a);
        });
    });
    return wrapped;
}

// Connects an npm dnode client exporting methods; resolves { remote, conn,
// close } once the server's methods arrived. Closed after the test.
function connect(t, methods = {}) {
    return new Promise((resolve, reject) => {
        const conn = dnode(methods, { weak: false });
        const timer = setTimeout(() => reject(new Error('no methods from the server')), TIMEOUT);
        const close = () => {
            conn.end();
            if (conn.stream) {
                conn.stream.destroy();
            }
        };
        conn.on('error', reject);
        conn.on('remote', (remote) => {
            clearTimeout(timer);
            resolve({ remote, conn, close });
        });
        conn.connect(d.port, '127.0.0.1');
        if (t) {
            t.after(close);
        }
    });
}

// Calls remote.method(...args, cb) and resolves with cb's arguments.
function call(remote, method, ...args) {
    const cb = once(`the reply to ${method}`);
    remote[method](...args, cb.fn);
    return cb.p;
}

// A pushing client: records created/updated/deleted/subscribed/... and error.
function pushMethods() {
    return {
        created: recorder(),
        updated: recorder(),
        deleted: recorder(),
        subscribed: recorder(),
        unsubscribed: recorder(),
        error: recorder(),
    };
}

test('methods exchange: the remote has the eight backbone-dnode methods', { skip },
    async (t) => {
        const { remote } = await connect(t);
        assert.deepStrictEqual(Object.keys(remote).sort(),
            ['auth', 'create', 'delete', 'publish', 'read', 'subscribe', 'unsubscribe', 'update']);
        for (const name of Object.keys(remote)) {
            assert.strictEqual(typeof remote[name], 'function', name);
        }
        assert.deepStrictEqual(await call(remote, 'subscribe', '/interop/hello'), [null]);
        assert.deepStrictEqual(await call(remote, 'unsubscribe', '/interop/hello'), [null]);
    });

test('a callback inside the options object receives the error', { skip }, async (t) => {
    const m = pushMethods();
    const { remote } = await connect(t, m);
    const onError = once('opt.error');
    const done = once('the create callback', 500);
    remote.create({ title: 'x' }, { type: 'nosuchmodel', url: '/interop/err', error: onError.fn },
        done.fn);
    const [err] = await onError.p;
    assert.strictEqual(err.name, 'InvalidRequest');
    assert.match(err.message, /nosuchmodel/);
    await assert.rejects(done.p, /not called/);
    assert.strictEqual(m.error.all.length, 0, 'opt.error is preferred over the error method');

    // Without opt.error the client's own error method gets it.
    remote.create({ title: 'x' }, { type: 'nosuchmodel' }, () => {});
    const [err2] = await m.error.next();
    assert.strictEqual(err2.name, 'InvalidRequest');
});

test('a function inside an array argument arrives as null, as JSON.stringify has it',
    { skip }, async (t) => {
        const url = '/interop/array-fn';
        const sub = pushMethods();
        const subscriber = await connect(t, sub);
        const publisher = await connect(t);
        assert.deepStrictEqual(await call(subscriber.remote, 'subscribe', url), [null]);
        const model = { title: 'with functions', list: [1, () => {}, 'x', { f: () => {}, k: 2 }] };
        assert.deepStrictEqual(await call(publisher.remote, 'publish', model,
            { url, method: 'create' }), [null]);
        const [doc, opt] = await sub.created.next();
        assert.deepStrictEqual(doc, JSON.parse(JSON.stringify(model)));
        assert.deepStrictEqual(doc.list, [1, null, 'x', { k: 2 }]);
        assert.deepStrictEqual(opt, { url, method: 'create', epoch: opt.epoch, offset: 1 });
    });

test('a circular structure is refused with InvalidRequest; the session carries on',
    { skip }, async (t) => {
        const url = '/interop/circular';
        const m = pushMethods();
        const { remote } = await connect(t, m);
        assert.deepStrictEqual(await call(remote, 'subscribe', url), [null]);
        const model = { title: 'loop' };
        model.self = model;
        const done = once('the publish callback', 500);
        remote.publish(model, { url, method: 'create' }, done.fn);
        const [err] = await m.error.next();
        assert.strictEqual(err.name, 'InvalidRequest');
        assert.match(err.message, /circular/i);
        await assert.rejects(done.p, /not called/);
        // Nothing was published, and the next calls work.
        assert.deepStrictEqual(await call(remote, 'publish', { title: 'flat' },
            { url, method: 'create' }), [null]);
        const [doc] = await m.created.next();
        assert.deepStrictEqual(doc, { title: 'flat' });
        assert.strictEqual(m.created.all.length, 1);
    });

test('cull of a method id removes that method for this client', { skip }, async (t) => {
    const m = pushMethods();
    const { remote, conn } = await connect(t, m);
    assert.deepStrictEqual(await call(remote, 'subscribe', '/interop/cull'), [null]);
    // The id dnode-protocol holds for the server's subscribe.
    const ids = Object.keys(conn.proto.callbacks.remote).map(Number)
        .filter((id) => conn.proto.callbacks.remote[id] === remote.subscribe);
    assert.strictEqual(ids.length, 1);
    const subscribe = remote.subscribe;
    conn.proto.cull(ids[0]);
    const done = once('subscribe after cull', 500);
    subscribe('/interop/cull2', done.fn);
    const [err] = await m.error.next();
    assert.strictEqual(err.name, 'InvalidRequest');
    assert.match(err.message, /unknown method/);
    await assert.rejects(done.p, /not called/);
    assert.deepStrictEqual(await call(remote, 'unsubscribe', '/interop/cull'), [null]);
});

test('a publish by one client reaches the other as created/updated/deleted', { skip },
    async (t) => {
        const url = '/interop/two';
        const aPush = pushMethods();
        const bPush = pushMethods();
        const a = await connect(t, aPush);
        const b = await connect(t, bPush);
        assert.deepStrictEqual(await call(b.remote, 'subscribe', url), [null]);
        const [joined] = [await bPush.subscribed.next()];
        assert.deepStrictEqual(joined, [url, 1]);

        const doc = { _id: '65a000000000000000000001', title: 'a', done: false };
        const opt = { url, error: () => {}, success: () => {}, silent: false };
        let offset = 0;
        for (const [method, pushed] of [['create', bPush.created], ['update', bPush.updated],
            ['delete', bPush.deleted]]) {
            assert.deepStrictEqual(await call(a.remote, 'publish', doc, { ...opt, method }),
                [null]);
            const [gotDoc, gotOpt] = await pushed.next();
            assert.deepStrictEqual(gotDoc, doc);
            // options pushed: the allowlist only (silent and the callbacks
            // stay), and the change's place in the channel's history
            offset++;
            assert.deepStrictEqual(gotOpt, { url, method, epoch: gotOpt.epoch, offset });
        }
        // The publisher did not subscribe and got nothing.
        assert.deepStrictEqual(await call(a.remote, 'subscribe', '/interop/other'), [null]);
        assert.strictEqual(aPush.created.all.length + aPush.updated.all.length +
            aPush.deleted.all.length, 0);
    });

test('500 concurrent clients each complete subscribe round trips', { skip }, async () => {
    const N = 500;
    const ROUNDS = 3;
    const clients = [];
    try {
        for (let i = 0; i < N; i += 50) {
            const batch = [];
            for (let j = i; j < Math.min(N, i + 50); j++) {
                batch.push(connect(null));
            }
            clients.push(...await Promise.all(batch));
        }
        assert.strictEqual(clients.length, N);
        const results = await Promise.all(clients.map(async ({ remote }, i) => {
            const out = [];
            for (let r = 0; r < ROUNDS; r++) {
                out.push(await call(remote, 'subscribe', `/interop/many/${i % 20}/${r}`));
            }
            out.push(await call(remote, 'unsubscribe', `/interop/many/${i % 20}/0`));
            return out;
        }));
        for (const out of results) {
            assert.deepStrictEqual(out, Array(ROUNDS + 1).fill([null]));
        }
    } finally {
        for (const c of clients) {
            c.close();
        }
    }
});

test('with npm dnode: auth, then the rules decide per user; pushes filtered per subscriber',
    { skip }, async (t) => {
        const crypto = require('node:crypto');
        const fs = require('node:fs');
        const os = require('node:os');
        const path = require('node:path');
        const jwt = require('../lib/jwt');
        const secret = crypto.randomBytes(32).toString('hex');
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-interop-'));
        fs.writeFileSync(path.join(dir, 'k'), secret);
        t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
        const server = await startDnoded({
            services,
            models: { memo: { collection: 'interop_memos',
                fields: { text: 'String', owner: { type: 'String', set_from: 'auth.sub' } },
                rules: { read: 'doc.owner == auth.sub', create: 'auth.sub != null',
                    delete: 'doc.owner == auth.sub' } } },
            config: { auth_key: path.join(dir, 'k') },
        }, t);
        const connectTo = (methods) => new Promise((resolve, reject) => {
            const conn = dnode(methods, { weak: false });
            conn.on('error', reject);
            conn.on('remote', (remote) => resolve({ remote, conn }));
            conn.connect(server.port, '127.0.0.1');
            t.after(() => {
                conn.end();
                if (conn.stream) {
                    conn.stream.destroy();
                }
            });
        });
        const ann = await connectTo(pushMethods());
        const bobPushes = pushMethods();
        const bob = await connectTo(bobPushes);
        const tok = (sub) => jwt.sign(jwt.claims({ sub }), secret);
        const [err, info] = await call(ann.remote, 'auth', tok('ann'));
        assert.strictEqual(err, null);
        assert.strictEqual(info.sub, 'ann');
        assert.strictEqual((await call(bob.remote, 'auth', tok('bob')))[0], null);
        const [bad] = await call(bob.remote, 'auth', jwt.sign(jwt.claims({ sub: 'ann' }), 'x'.repeat(40)));
        assert.strictEqual(bad.name, 'Unauthorized');

        const url = '/interop/memos';
        assert.deepStrictEqual(await call(bob.remote, 'subscribe', url), [null]);
        const [memo] = await call(ann.remote, 'create', { text: 'mine' }, { type: 'memo', url });
        assert.strictEqual(memo.owner, 'ann');
        // bob hears nothing of ann's memo, reads none, and cannot delete it
        await assert.rejects(bobPushes.created.next(400), /no call/);
        assert.deepStrictEqual(await call(bob.remote, 'read', { type: 'memo' }), [[]]);
        const refused = once('opt.error');
        bob.remote.delete({ _id: memo._id }, { type: 'memo', error: refused.fn }, () => {});
        const [e] = await refused.p;
        assert.strictEqual(e.name, 'NotFound');
        // and a forged publish on the channel is refused (publish needs a rule)
        const denied = once('opt.error of publish');
        bob.remote.publish({ text: 'forged' }, { url, method: 'create', error: denied.fn }, () => {});
        assert.strictEqual((await denied.p)[0].name, 'Forbidden');
    });
