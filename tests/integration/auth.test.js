'use strict';
// Identity and permissions: sessions authenticate with a token (auth),
// and the models file's rules decide what each may read, write, subscribe
// to, publish and be pushed. Two users (ann, bob) and an anonymous client,
// against the real daemon and a real database.

const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { startDnoded } = require('../lib/harness');
const { getServices } = require('../lib/services');
const { findProgram } = require('../lib/proc');
const { MongoConnection, ObjectId } = require('../lib/mongo');
const jwt = require('../lib/jwt');

const skip = process.env.DNODED_TEST_MONGODB_URI || findProgram('ferretdb', 'DNODED_TEST_FERRETDB')
    ? false : 'needs ferretdb (scripts/setup) or DNODED_TEST_MONGODB_URI';

const MODELS = {
    todo: {
        collection: 'authtodos',
        fields: {
            title: { type: 'String', required: true },
            done: { type: 'Boolean', default: false },
            shared: { type: 'Boolean', default: false },
            owner: { type: 'String', set_from: 'auth.sub' },
            notes: { type: 'String', hidden: 'doc.owner != auth.sub' },
            secret: { type: 'String', hidden: true },
        },
        rules: {
            read: 'doc.shared || doc.owner == auth.sub',
            create: 'auth.sub != null',
            update: "old.owner == auth.sub && new.title != 'locked'",
            delete: 'doc.owner == auth.sub',
        },
    },
    $channels: [
        { match: '/todos/{auth.sub}' },
        { match: '/todos/shared', presence: 'auth.sub != null', publish: "'admin' in auth.roles" },
    ],
};

const SECRET = crypto.randomBytes(40).toString('hex');
const PREVIOUS = crypto.randomBytes(40).toString('hex');

let services;
let d;
let db;

test.before(async () => {
    if (skip) {
        return;
    }
    services = await getServices({ redis: false, label: 'auth' });
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-auth-'));
    fs.writeFileSync(path.join(dir, 'current.key'), `${SECRET}\n`);
    fs.writeFileSync(path.join(dir, 'previous.key'), PREVIOUS);
    d = await startDnoded({
        services, models: MODELS,
        config: {
            workers: 2,
            auth_key: path.join(dir, 'current.key'),
            auth_previous_key: path.join(dir, 'previous.key'),
            auth_audience: 'todos',
        },
    });
    db = await MongoConnection.connect(services.mongodbUri);
});

test.after(async () => {
    if (db) {
        await db.close();
    }
    if (d) {
        await d.close();
    }
    if (services) {
        await services.close();
    }
});

const token = (sub, more = {}, key = SECRET, alg = 'HS256') =>
    jwt.sign(jwt.claims({ sub, aud: 'todos', ...more }), key, alg);

// A client that exports the pushes (recorded) and has authenticated as sub
// (null: anonymous).
async function user(t, sub, more = {}) {
    const c = await d.pushClient(t);
    if (sub !== null) {
        const [err, info] = await c.invoke('auth', token(sub, more));
        assert.strictEqual(err, null, JSON.stringify(err));
        assert.strictEqual(info.sub, sub);
    }
    return c;
}

// method(...args, opt) with opt.error: resolves { doc } or { error }.
function call(c, method, ...args) {
    return c.answer(method, args, 10000);
}

const ok = (r) => {
    assert.ok(r.doc !== undefined, JSON.stringify(r.error));
    return r.doc;
};
const refused = (r, name) => {
    assert.ok(r.error, `refused with ${name}, got ${JSON.stringify(r.doc)}`);
    assert.strictEqual(r.error.name, name, JSON.stringify(r.error));
    return r.error;
};
const stored = async (id) => (await db.find('authtodos', { _id: new ObjectId(id) }))[0];

// No push of name arrives at c within ms.
async function noPush(c, name, ms = 500) {
    await assert.rejects(c.next((m) => m.name === name, { timeoutMs: ms }), /timed out/);
}

test('a valid token authenticates; bad ones are refused with Unauthorized', { skip }, async (t) => {
    const c = await d.pushClient(t);
    const refusedToken = async (tok, why) => {
        const [err, info] = await c.invoke('auth', tok);
        assert.ok(err, `refused: ${why}`);
        assert.strictEqual(err.name, 'Unauthorized');
        assert.match(err.message, why);
        assert.strictEqual(info, undefined);
    };
    const claims = jwt.claims({ sub: 'ann', aud: 'todos' });
    await refusedToken(jwt.sign({ ...claims, exp: jwt.now() - 120 }, SECRET), /expired/);
    await refusedToken(jwt.sign({ ...claims, nbf: jwt.now() + 600 }, SECRET), /not valid yet/);
    await refusedToken(jwt.sign({ sub: 'ann', aud: 'todos' }, SECRET), /no exp/);
    await refusedToken(jwt.sign({ ...claims, aud: 'other' }, SECRET), /audience/);
    await refusedToken(jwt.sign(claims, 'a different secret of enough length, 12345'), /signature/);
    await refusedToken(jwt.sign(claims, SECRET, 'none'), /alg/);
    // one byte of the payload changed (sub: ann -> anm), signature kept
    const good = jwt.sign(claims, SECRET);
    const [h, p, s] = good.split('.');
    const forged = Buffer.from(p, 'base64url').toString().replace('"ann"', '"anm"');
    await refusedToken(`${h}.${jwt.b64url(forged)}.${s}`, /signature/);
    await refusedToken(`${h}.${p}`, /malformed/);
    await refusedToken('x'.repeat(9000), /malformed/);
    // alg confusion: RS256 in the header, signed with nothing we hold
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    await refusedToken(jwt.sign(claims, privateKey, 'RS256'), /alg RS256 is not accepted/);
    // still anonymous after all that
    refused(await call(c, 'create', { title: 'x' }, { type: 'todo' }), 'Forbidden');

    const [err, info] = await c.invoke('auth', good);
    assert.strictEqual(err, null);
    assert.deepStrictEqual(info, { sub: 'ann', exp: claims.exp });
    // a refresh keeps the sub
    const [err2] = await c.invoke('auth', token('bob'));
    assert.strictEqual(err2.name, 'Unauthorized');
    assert.match(err2.message, /keep the sub/);
    const [err3] = await c.invoke('auth', token('ann'));
    assert.strictEqual(err3, null);
    // the key being rotated out still works
    const prev = await d.pushClient(t);
    const [err4, info4] = await prev.invoke('auth', token('bob', {}, PREVIOUS));
    assert.strictEqual(err4, null);
    assert.strictEqual(info4.sub, 'bob');
});

test('every CRUD method is allowed and refused as the rules say', { skip }, async (t) => {
    const ann = await user(t, 'ann');
    const bob = await user(t, 'bob');
    const anon = await user(t, null);
    const batch = `crud${Date.now()}`;

    // set_from: the owner is the token's sub, whatever was sent
    const mine = ok(await call(ann, 'create', { title: `${batch} private`, owner: 'bob', notes: 'n1',
        secret: 's1' }, { type: 'todo' }));
    assert.strictEqual(mine.owner, 'ann');
    assert.strictEqual(mine.notes, 'n1', 'the owner sees her notes');
    assert.strictEqual(mine.secret, undefined, 'hidden: true reaches nobody');
    assert.strictEqual((await stored(mine._id)).secret, 's1', 'but it is stored');
    const shared = ok(await call(ann, 'create', { title: `${batch} shared`, shared: true,
        notes: 'n2' }, { type: 'todo' }));
    refused(await call(anon, 'create', { title: `${batch} anon` }, { type: 'todo' }), 'Forbidden');

    // reads return exactly what the read rule allows
    const seen = (r) => ok(r).map((x) => x.title).sort();
    assert.deepStrictEqual(seen(await call(ann, 'read', { type: 'todo', query: { title: { $regex: batch } } })),
        [`${batch} private`, `${batch} shared`]);
    assert.deepStrictEqual(seen(await call(bob, 'read', { type: 'todo', query: { title: { $regex: batch } } })),
        [`${batch} shared`]);
    assert.deepStrictEqual(seen(await call(anon, 'read', { type: 'todo', query: { title: { $regex: batch } } })),
        [`${batch} shared`]);
    refused(await call(bob, 'read', { type: 'todo', query: { _id: mine._id } }), 'NotFound');
    const theirs = ok(await call(bob, 'read', { type: 'todo', query: { _id: shared._id } }));
    assert.strictEqual(theirs.notes, undefined, 'notes are hidden from whoever does not own it');
    assert.strictEqual(theirs.title, `${batch} shared`);
    // a query on a hidden field would tell its value
    refused(await call(bob, 'read', { type: 'todo', query: { notes: { $regex: '^n' } } }), 'Forbidden');
    refused(await call(bob, 'read', { type: 'todo', sorting: { sort: { secret: 1 } } }), 'Forbidden');

    // updates: NotFound when unreadable, Forbidden when the rule refuses
    refused(await call(bob, 'update', { _id: mine._id, title: 'taken' }, { type: 'todo' }), 'NotFound');
    refused(await call(bob, 'update', { _id: shared._id, title: 'taken' }, { type: 'todo' }), 'Forbidden');
    refused(await call(ann, 'update', { _id: shared._id, title: 'locked' }, { type: 'todo' }), 'Forbidden');
    // the owner cannot be changed (set_from is readonly after create)
    const up = ok(await call(ann, 'update', { _id: shared._id, done: true, owner: 'bob' }, { type: 'todo' }));
    assert.strictEqual(up.owner, 'ann');
    assert.strictEqual(up.done, true);
    assert.strictEqual((await stored(shared._id)).title, `${batch} shared`, 'refused updates changed nothing');

    // deletes
    refused(await call(bob, 'delete', { _id: mine._id }, { type: 'todo' }), 'NotFound');
    refused(await call(bob, 'delete', { _id: shared._id }, { type: 'todo' }), 'Forbidden');
    refused(await call(anon, 'delete', { _id: shared._id }, { type: 'todo' }), 'Forbidden');
    assert.ok(await stored(shared._id), 'still there');
    ok(await call(ann, 'delete', { _id: shared._id }, { type: 'todo' }));
    assert.strictEqual(await stored(shared._id), undefined);
});

test('pushes go only where the read rule allows, hidden fields removed per subscriber',
    { skip }, async (t) => {
        const ann = await user(t, 'ann');
        const bob = await user(t, 'bob');
        const anon = await user(t, null);
        const url = '/todos/shared';
        for (const c of [ann, bob, anon]) {
            assert.deepStrictEqual(await c.invoke('subscribe', url), [null]);
        }
        const opt = { type: 'todo', url, authToken: 'do-not-leak', extra: 1 };
        const batch = `push${Date.now()}`;

        // private: only its owner hears of it
        const priv = ok(await call(ann, 'create', { title: `${batch} p`, notes: 'mine' }, opt));
        const [doc, o] = await ann.nextCall('created');
        assert.strictEqual(doc._id, priv._id);
        assert.strictEqual(doc.notes, 'mine');
        assert.deepStrictEqual(o, { type: 'todo', url, epoch: o.epoch, offset: o.offset },
            'pushed options: the allowlist only, and the place in the history');
        await noPush(bob, 'created');
        await noPush(anon, 'created', 100);

        // shared: everyone, without the notes but for the owner
        const sh = ok(await call(ann, 'create', { title: `${batch} s`, shared: true, notes: 'n' }, opt));
        const [bdoc, bopt] = await bob.nextCall('created');
        assert.strictEqual(bdoc._id, sh._id);
        assert.strictEqual(bdoc.notes, undefined);
        assert.strictEqual(bdoc.secret, undefined);
        assert.deepStrictEqual(bopt, { type: 'todo', url, epoch: o.epoch, offset: o.offset + 1 },
            'offsets count changes a subscriber may not see');
        const [adoc] = await ann.nextCall('created');
        assert.strictEqual(adoc.notes, 'n');
        assert.strictEqual((await anon.nextCall('created'))[0]._id, sh._id);

        // an update that takes it out of their view: deleted for them
        ok(await call(ann, 'update', { _id: sh._id, shared: false }, opt));
        const [gone] = await bob.nextCall('deleted');
        assert.strictEqual(gone._id, sh._id);
        assert.strictEqual(gone.notes, undefined, 'nor in the deleted push');
        assert.strictEqual((await anon.nextCall('deleted'))[0]._id, sh._id);
        const [still] = await ann.nextCall('updated');
        assert.strictEqual(still.shared, false);
        // and one that brings it back: created
        ok(await call(ann, 'update', { _id: sh._id, shared: true }, opt));
        assert.strictEqual((await bob.nextCall('created'))[0]._id, sh._id);
        // silent is not the writer's to choose on this model: pushed anyway
        const quiet = ok(await call(ann, 'create', { title: `${batch} q`, shared: true },
            { ...opt, silent: true }));
        await bob.next((m) => m.name === 'created' && m.args[0]._id === quiet._id,
            { what: 'the silent create, pushed' });
        // no error ever carried the hidden value
        for (const c of [bob, anon]) {
            for (const m of c.received) {
                assert.ok(!JSON.stringify(m).includes('"n"') || m.name === 'methods',
                    `hidden value reached ${m.name}`);
            }
        }
    });

test('channels: subscribe, publish and presence as $channels says; a forged publish is refused',
    { skip }, async (t) => {
        const ann = await user(t, 'ann');
        const bob = await user(t, 'bob');
        const admin = await user(t, 'root', { roles: ['admin'] });
        const anon = await user(t, null);

        assert.deepStrictEqual(await bob.invoke('subscribe', '/todos/bob'), [null]);
        const [err] = await bob.invoke('subscribe', '/todos/ann');
        assert.match(err, /^Forbidden/);
        const [err2] = await anon.invoke('subscribe', '/elsewhere');
        assert.match(err2, /^Forbidden/, 'a channel no entry matches');
        assert.deepStrictEqual(await ann.invoke('subscribe', '/todos/ann'), [null]);
        assert.deepStrictEqual(await ann.invoke('subscribe', '/todos/shared'), [null]);

        // a forged created from bob on ann's channel, or on the shared one
        const forged = { _id: '5f0000000000000000000009', title: 'forged', owner: 'ann' };
        const r = await call(bob, 'publish', forged, { url: '/todos/ann', method: 'create' });
        refused(r, 'Forbidden');
        refused(await call(bob, 'publish', forged, { url: '/todos/shared', method: 'create' }),
            'Forbidden');
        await noPush(ann, 'created');
        // an admin may publish on the shared channel
        ok(await call(admin, 'publish', { title: 'notice' }, { url: '/todos/shared', method: 'create' }));
        const [notice] = await ann.nextCall('created');
        assert.strictEqual(notice.title, 'notice');

        // presence: users see the shared channel's count, anonymous does not
        const seenBefore = ann.received.length;
        assert.deepStrictEqual(await anon.invoke('subscribe', '/todos/shared'), [null]);
        assert.deepStrictEqual(await bob.invoke('subscribe', '/todos/shared'), [null]);
        await ann.next((m) => m.name === 'subscribed' && m.args[0] === '/todos/shared' &&
            ann.received.indexOf(m) >= seenBefore, { what: 'a presence push after the subscribes' });
        await noPush(anon, 'subscribed');
    });

test('RS256 and ES256 keys; an HMAC made with the public key is refused', { skip }, async (t) => {
    for (const [alg, type, opts] of [['RS256', 'rsa', { modulusLength: 2048 }],
        ['ES256', 'ec', { namedCurve: 'P-256' }]]) {
        const { publicKey, privateKey } = crypto.generateKeyPairSync(type, opts);
        const pub = publicKey.export({ type: 'spki', format: 'pem' });
        const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-auth-'));
        fs.writeFileSync(path.join(dir, 'pub.pem'), pub);
        t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
        const server = await startDnoded({
            services, models: MODELS,
            config: { auth_key: path.join(dir, 'pub.pem'), auth_key_alg: alg },
        }, t);
        const c = await server.connect();
        t.after(() => c.close());
        const claims = jwt.claims({ sub: 'carol' });
        const [err, info] = await c.invoke('auth', jwt.sign(claims, privateKey, alg));
        assert.strictEqual(err, null, `${alg}: ${JSON.stringify(err)}`);
        assert.strictEqual(info.sub, 'carol');
        // the classic confusion: HS256 keyed with the public key's PEM
        const [err2] = await c.invoke('auth', jwt.sign(claims, pub, 'HS256'));
        assert.strictEqual(err2.name, 'Unauthorized');
        assert.match(err2.message, /alg HS256 is not accepted/);
    }
});

test('auth_anonymous = deny; authExpiring before exp; closed after the grace period',
    { skip }, async (t) => {
        const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-auth-'));
        fs.writeFileSync(path.join(dir, 'k'), SECRET);
        t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
        const server = await startDnoded({
            services, models: MODELS,
            config: { auth_key: path.join(dir, 'k'), auth_anonymous: 'deny', auth_timeout: 2,
                auth_expiry_notice: 3, auth_grace: 1, auth_leeway: 0 },
        }, t);
        const { WsConn } = require('../lib/raw_http');
        const anonWs = await WsConn.open(server.port, { path: '/dnode' });
        t.after(() => anonWs.close());
        await anonWs.nextMessage((m) => m.method === 'methods', 'the methods message');
        const anon = await server.pushClient(t);
        const r = await call(anon, 'read', { type: 'todo' });
        refused(r, 'Unauthorized');
        await anon.waitClosed(6000);
        assert.match(server.stderr(), /not authenticated within auth_timeout/);
        // over WebSocket the session ends with a close frame: policy violation
        assert.strictEqual(await anonWs.closeCode(), 1008);

        const expiring = [];
        const c = await server.pushClient(t, { methods: { authExpiring: (s) => expiring.push(s) } });
        const exp = jwt.now() + 4;
        const [err] = await c.invoke('auth', jwt.sign({ sub: 'ann', exp }, SECRET));
        assert.strictEqual(err, null);
        ok(await call(c, 'read', { type: 'todo', sorting: { limit: 1 } }));
        await c.nextCall('authExpiring', { timeoutMs: 5000 });
        assert.ok(expiring[0] <= 3 && expiring[0] >= 0, `authExpiring(${expiring[0]})`);
        await c.waitClosed(8000);
        assert.ok(jwt.now() >= exp + 1, 'closed only after exp + grace');
        assert.match(server.stderr(), /token expired and was not refreshed/);
    });

test('a token in the WebSocket URL authenticates the session; a bad one is refused with 401',
    { skip }, async () => {
        const { WsConn } = require('../lib/raw_http');
        await assert.rejects(WsConn.open(d.port, { path: `/dnode?token=${jwt.sign(
            jwt.claims({ sub: 'ann', aud: 'todos' }), 'not the secret, but long enough for HS256')}` }),
        (err) => err.status === 401);
        await assert.rejects(WsConn.open(d.port, { path: '/dnode?token=%zz' }),
            (err) => err.status === 401);

        const c = await WsConn.open(d.port, { path: `/dnode?x=1&token=${token('ann')}` });
        try {
            await c.nextMessage((m) => m.method === 'methods', 'the methods message');
            c.sendJson({ method: 'methods', arguments: [{}], callbacks: {} });
            c.sendJson({ method: 'create', arguments: [{ title: 'by ws' }, { type: 'todo' }, '[Function]'],
                callbacks: { 7: [2] } });
            const reply = await c.nextMessage((m) => m.method === 7, 'the reply to create');
            assert.strictEqual(reply.arguments[0].owner, 'ann', JSON.stringify(reply));
        } finally {
            c.close();
        }
    });

test('the browser client takes a token provider, authenticates on connect and refreshes on authExpiring',
    { skip: skip || (() => { try { require.resolve('ws'); require.resolve('backbone'); return false; } catch { return 'needs the npm packages ws and backbone'; } })() },
    async (t) => {
        const vm = require('node:vm');
        const srcdir = process.env.DNODED_SRCDIR || path.join(__dirname, '..', '..');
        const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-auth-'));
        fs.writeFileSync(path.join(dir, 'k'), SECRET);
        t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
        // tokens live an hour; the notice comes at once
        const server = await startDnoded({
            services, models: MODELS,
            config: { auth_key: path.join(dir, 'k'), auth_expiry_notice: 3599 },
        }, t);
        const g = {
            console, setTimeout, clearTimeout, Math, Date, JSON,
            location: { protocol: 'http:', host: `127.0.0.1:${server.port}` },
            WebSocket: require('ws'),
            tokenFor: () => Promise.resolve(jwt.sign(jwt.claims({ sub: 'ann' }), SECRET)),
        };
        g.window = g;
        g.self = g;
        vm.createContext(g);
        for (const file of [require.resolve('underscore/underscore-umd.js'),
            require.resolve('backbone/backbone.js'), path.join(srcdir, 'browser', 'dnode.js'),
            path.join(srcdir, 'browser', 'dnode.backbone.js')]) {
            vm.runInContext(fs.readFileSync(file, 'utf8'), g, { filename: file });
        }
        vm.runInContext(`
            var asked = 0, authErrors = [], saved = null, refused = null;
            var Todo = Backbone.Model.extend({ type: 'todo', urlRoot: '/todos/ann', sync: _.sync });
            Backbone.on('dnode:auth-error', function (e) { authErrors.push(e); });
            var conn = DNode().use(BackboneDNode({ token: function () { asked++; return tokenFor(); } }));
            conn.connect({ minDelay: 50, maxDelay: 400 });
            new Todo({ title: 'from a page' }).save(null, {
                success: function (m) { saved = m.toJSON(); } });
            new Todo({ _id: '5f0000000000000000000001', title: 'x' }).destroy({
                error: function (m, err) { refused = err; } });
        `, g);
        t.after(() => vm.runInContext('conn.close && conn.close()', g));
        const until = async (expr, what) => {
            for (let i = 0; i < 100; i++) {
                if (vm.runInContext(expr, g)) {
                    return;
                }
                await new Promise((r) => setTimeout(r, 100));
            }
            throw new Error(`${what}: ${vm.runInContext('JSON.stringify({asked, authErrors, saved, refused})', g)}`);
        };
        await until('saved !== null', 'the save is answered');
        assert.strictEqual(vm.runInContext('saved.owner', g), 'ann', 'authenticated from the first call');
        await until('refused !== null', 'the delete is refused');
        assert.strictEqual(vm.runInContext('refused.name', g), 'NotFound');
        // authExpiring: the provider is asked again and the refresh accepted
        await until('asked >= 2', 'the provider is asked again on authExpiring');
        await new Promise((r) => setTimeout(r, 300));
        assert.strictEqual(vm.runInContext('authErrors.length', g), 0,
            vm.runInContext('JSON.stringify(authErrors)', g));
    });

test('a revocation closes the sessions it covers on every worker and host within a second',
    { skip: skip || (findProgram('redis-server', 'DNODED_TEST_REDIS_SERVER') || process.env.DNODED_TEST_REDIS_URL
        ? false : 'needs redis-server') }, async (t) => {
        const { spawnSync } = require('node:child_process');
        const redisServices = await getServices({ mongo: false, label: 'revoke' });
        t.after(() => redisServices.close());
        const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-auth-'));
        fs.writeFileSync(path.join(dir, 'k'), SECRET);
        t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
        const config = { workers: 2, auth_key: path.join(dir, 'k'), redis_prefix: `rv${Date.now()}:` };
        const hosts = [];
        for (let i = 0; i < 2; i++) {
            hosts.push(await startDnoded({ mongodbUri: services.mongodbUri,
                redisUrl: redisServices.redisUrl, models: MODELS, config }, t));
        }
        // ann and bob on every worker of both hosts (each worker alone
        // accepts while the other is stopped)
        const sessions = [];
        for (const h of hosts) {
            await h.waitWorkers(2);
            for (const pid of h.workerPids()) {
                await h.withOnlyWorker(pid, async () => {
                    for (const sub of ['ann', 'bob']) {
                        const c = await h.connect();
                        t.after(() => c.close());
                        const tok = token(sub, { jti: `${sub}-${pid}` });
                        const [err] = await c.invoke('auth', tok);
                        assert.strictEqual(err, null, JSON.stringify(err));
                        sessions.push({ c, sub, pid, tok });
                    }
                });
            }
        }
        assert.strictEqual(sessions.length, 8);
        const revoke = (what) => {
            const r = spawnSync(hosts[0].bin, ['-c', hosts[0].configPath, '-r', what],
                { encoding: 'utf8' });
            assert.strictEqual(r.status, 0, r.stderr);
        };
        // one token by its id: only that session
        const one = sessions.find((s) => s.sub === 'bob');
        let started = Date.now();
        revoke(`jti=bob-${one.pid}`);
        await one.c.waitClosed(1000);
        t.diagnostic(`jti revocation closed its session in ${Date.now() - started} ms`);
        // ... and one more of ann's, over WebSocket with the token in its URL
        const { WsConn } = require('../lib/raw_http');
        const annTok = token('ann', { jti: 'ann-ws' });
        const annWs = await WsConn.open(hosts[1].port, { path: `/dnode?token=${annTok}` });
        t.after(() => annWs.close());
        await annWs.nextMessage((m) => m.method === 'methods', 'the methods message');
        // every token of ann so far: her four sessions, on both hosts
        started = Date.now();
        revoke('sub=ann');
        await Promise.all(sessions.filter((s) => s.sub === 'ann').map((s) => s.c.waitClosed(1000)));
        const took = Date.now() - started;
        t.diagnostic(`sub revocation closed 4 sessions on 2 hosts in ${took} ms`);
        assert.ok(took <= 1000, `closed in ${took} ms`);
        // a WebSocket session ended for its token says so: policy violation
        assert.strictEqual(await annWs.closeCode(), 1008);
        // and so does one that comes back with the revoked token in its URL
        const again = await WsConn.open(hosts[0].port, { path: `/dnode?token=${annTok}` });
        t.after(() => again.close());
        assert.strictEqual(await again.closeCode(), 1008);
        // bob's others carry on
        for (const s of sessions.filter((x) => x.sub === 'bob' && x !== one)) {
            assert.deepStrictEqual(await s.c.invoke('subscribe', '/todos/bob'), [null]);
        }
        // the revoked tokens are refused from now on, on either host
        for (const h of hosts) {
            const c = await h.connect();
            t.after(() => c.close());
            const [err] = await c.invoke('auth', sessions.find((s) => s.sub === 'ann').tok);
            assert.strictEqual(err && err.message, 'token revoked');
            const [err2] = await c.invoke('auth', one.tok);
            assert.strictEqual(err2 && err2.message, 'token revoked');
        }
        // a token issued after the revocation is good
        await new Promise((r) => setTimeout(r, 2100));
        const c = await hosts[1].connect();
        t.after(() => c.close());
        const [err] = await c.invoke('auth', jwt.sign(jwt.claims({ sub: 'ann', aud: 'todos' }), SECRET));
        assert.strictEqual(err, null);
        // without redis_url there is nothing to revoke through
        const r = spawnSync(hosts[0].bin, ['-c', d.configPath, '-r', 'sub=ann'], { encoding: 'utf8' });
        assert.strictEqual(r.status, 1);
        assert.match(r.stderr, /need redis_url/);
    });

test('a reload applies new keys: rotation by config, a bad key file refused with the running keys kept',
    { skip }, async (t) => {
        const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-auth-'));
        t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
        const A = crypto.randomBytes(32).toString('hex');
        const B = crypto.randomBytes(32).toString('hex');
        fs.writeFileSync(path.join(dir, 'a.key'), A);
        fs.writeFileSync(path.join(dir, 'b.key'), B);
        fs.writeFileSync(path.join(dir, 'bad.key'), 'too short');
        const server = await startDnoded({
            services, models: MODELS, config: { auth_key: path.join(dir, 'a.key') },
        }, t);
        const authWith = async (key) => {
            const c = await server.connect();
            try {
                const [err] = await c.invoke('auth', jwt.sign(jwt.claims({ sub: 'ann' }), key));
                return err === null;
            } finally {
                c.close();
            }
        };
        assert.strictEqual(await authWith(A), true);
        assert.strictEqual(await authWith(B), false);
        const conf = fs.readFileSync(server.configPath, 'utf8');
        const withKeys = (cur, prev) => conf.replace(/^auth_key = .*$/m, '') +
            `auth_key = ${path.join(dir, cur)}\n` + (prev ? `auth_previous_key = ${path.join(dir, prev)}\n` : '');
        // rotate: B current, A previous
        let since = server.stderr().length;
        fs.writeFileSync(server.configPath, withKeys('b.key', 'a.key'));
        server.signal('SIGHUP');
        await server.waitForLog(/reloaded: generation 2 started/, { since });
        assert.strictEqual(await authWith(B), true);
        assert.strictEqual(await authWith(A), true, 'the previous key still works');
        // a key file that cannot be loaded: refused, the running keys kept
        since = server.stderr().length;
        fs.writeFileSync(server.configPath, withKeys('bad.key', null));
        server.signal('SIGHUP');
        const line = await server.waitForLog(/reload failed, still running the previous configuration/,
            { since });
        assert.match(line, /auth_key .*bad\.key: an HS256 secret needs at least 32 bytes/);
        assert.strictEqual(await authWith(B), true);
        // A retired
        since = server.stderr().length;
        fs.writeFileSync(server.configPath, withKeys('b.key', null));
        server.signal('SIGHUP');
        await server.waitForLog(/reloaded: generation 3 started/, { since });
        assert.strictEqual(await authWith(A), false);
        assert.strictEqual(await authWith(B), true);
    });
