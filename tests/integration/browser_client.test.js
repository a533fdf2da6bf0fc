'use strict';
// browser/dnode.js and browser/dnode.backbone.js against the real dnoded
// (FerretDB behind it), outside a browser: each "page" is a vm context with
// the npm Backbone and underscore, and the ws package as its WebSocket. It
// covers the client API the e2e test does not reach: the scrub/unscrub
// rules (callbacks at any path, links), fetch with query and sorting,
// finished and error callbacks with the server's error object, presence
// events, pushes into collections and models, and catching up after a
// reconnection (resubscribe, fetch again, calls queued while down).

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const { startDnoded } = require('../lib/harness');
const { getServices } = require('../lib/services');
const { findProgram, freePort, timeScale, waitFor } = require('../lib/proc');

const srcdir = process.env.DNODED_SRCDIR || path.join(__dirname, '..', '..');
const WAIT_MS = 10000 * timeScale;

// A module of the npm packages (scripts/setup), or null when missing.
function npmPath(name) {
    try {
        return require.resolve(name);
    } catch (err) {
        return null;
    }
}

const SCRIPTS = [
    npmPath('underscore/underscore-umd.js'),
    npmPath('backbone/backbone.js'),
    path.join(srcdir, 'browser', 'dnode.js'),
    path.join(srcdir, 'browser', 'dnode.backbone.js'),
];

const npmSkip = SCRIPTS.includes(null) || !npmPath('ws')
    ? 'the npm packages underscore, backbone and ws are not installed (scripts/setup)' : false;
const skip = npmSkip ||
    ((process.env.DNODED_TEST_MONGODB_URI || findProgram('ferretdb', 'DNODED_TEST_FERRETDB'))
        ? false : 'needs ferretdb (scripts/setup) or DNODED_TEST_MONGODB_URI');

// A page: the four scripts in a fresh global, connected to dnoded.
function page(port) {
    const WebSocket = require('ws');
    const g = {
        console, setTimeout, clearTimeout, Math, Date, JSON,
        location: { protocol: 'http:', host: `127.0.0.1:${port}` },
        WebSocket,
    };
    g.window = g;
    g.self = g;
    vm.createContext(g);
    for (const file of SCRIPTS) {
        vm.runInContext(fs.readFileSync(file, 'utf8'), g, { filename: file });
    }
    vm.runInContext(`
        var Todo = Backbone.Model.extend({ type: 'todo', sync: _.sync,
            defaults: { completed: false } });
        var Todos = Backbone.Collection.extend({ model: Todo, type: 'todo', url: 'todos',
            sync: _.sync, comparator: 'order' });
        var todos = new Todos();
        var conn = DNode().use(BackboneDNode({ pubsub: true }));
        var events = [];
        conn.on('ready', function () { events.push('ready'); });
        conn.on('down', function () { events.push('down'); });
        conn.connect({ minDelay: 50, maxDelay: 400 });
    `, g);
    return g;
}

// Objects made inside a page come from another realm: compare plain copies.
const plain = (v) => JSON.parse(JSON.stringify(v));

// Waits for fn(); on a timeout the error tells what each page went through.
async function until(fn, what) {
    try {
        return await waitFor(fn, { timeoutMs: WAIT_MS, intervalMs: 20, what });
    } catch (err) {
        err.message += '\n' + pages.map((p, i) => `page ${i}: events ${p.events.join(',')}; ` +
            `todos ${JSON.stringify(p.todos.map((m) => [m.id, m.get('title')]))}`).join('\n');
        throw err;
    }
}

// Backbone calls wrapped in promises: resolve on finished, reject on error.
function save(model, attrs, opts = {}) {
    return new Promise((resolve, reject) => model.save(attrs, {
        ...opts, finished: (m, resp) => resolve(resp), error: (m, err) => reject(err),
    }));
}
function create(col, attrs) {
    return new Promise((resolve, reject) => col.create(attrs, {
        finished: (m) => resolve(m), error: (m, err) => reject(err),
    }));
}
function fetch(col, opts = {}) {
    return new Promise((resolve, reject) => col.fetch({
        ...opts, finished: (c, resp) => resolve(resp), error: (c, err) => reject(err),
    }));
}
function subscribe(obj) {
    return new Promise((resolve, reject) => obj.subscribe((err) => (err ? reject(err) : resolve())));
}

let services;
let d;
const pages = [];

// Two pages (on ports a and b) whose connections are ready; closed with
// the others after the tests.
async function twoPages(portA = d.port, portB = d.port) {
    const a = page(portA);
    const b = page(portB);
    pages.push(a, b);
    await until(() => a.conn.isReady() && b.conn.isReady(), 'both pages ready');
    return [a, b];
}

test.before(async () => {
    if (skip) {
        return;
    }
    services = await getServices({ redis: false });
    d = await startDnoded({
        services,
        port: await freePort(),
        // the example's fields, without its permissions (auth.test.js and
        // the e2e test cover those): this file is about the client
        models: { todo: { collection: 'todos', fields: {
            title: { type: 'String', required: true, maxlength: 500 },
            completed: { type: 'Boolean', default: false },
            order: { type: 'Number', default: 0 },
        } } },
    });
});

test.after(async () => {
    for (const p of pages) {
        p.conn.close();
    }
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

test('scrub: callbacks at any path, repeated and cyclic objects as links', { skip: npmSkip },
    () => {
        const g = page(1); // never connects to anything that answers; scrub is pure
        g.conn.close();
        const f = () => {};
        const h = () => {};
        const shared = { s: 1 };
        const cyclic = { name: 'c' };
        cyclic.self = cyclic;
        const ids = new Map();
        const idOf = (fn) => {
            if (!ids.has(fn)) {
                ids.set(fn, ids.size + 10);
            }
            return ids.get(fn);
        };
        const out = g.DNode.scrub([1, { a: [f, { deep: h }] }, shared, [shared], cyclic, f], idOf);
        assert.deepStrictEqual(plain(out.callbacks), { 10: [5], 11: [1, 'a', 1, 'deep'] });
        assert.deepStrictEqual(plain(out.arguments[1]),
            { a: ['[Function]', { deep: '[Function]' }] });
        assert.deepStrictEqual(plain(out.arguments[3]), [null]);
        assert.deepStrictEqual(plain(out.links), [
            { from: [2], to: [3, 0] },
            { from: [4], to: [4, 'self'] },
        ]);
        assert.strictEqual(out.arguments[4].self, '[Circular]');
        assert.strictEqual(JSON.stringify(out.arguments[5]), '"[Function]"');
    });

test('unscrub: callbacks placed at their paths, links restored, __proto__ ignored',
    { skip: npmSkip }, () => {
        const g = page(1);
        g.conn.close();
        const c = g.conn;
        const got = [];
        c.instance = { hello: (...args) => got.push(args) };
        c._handle({
            method: 'hello',
            arguments: [{ x: { cb: '[Function]' } }, { n: 1 }, null, {}],
            callbacks: { 3: [0, 'x', 'cb'], 4: ['__proto__', 'polluted'] },
            links: [{ from: [1], to: [2] }, { from: [1], to: [3, 'again'] }],
        });
        assert.strictEqual(got.length, 1);
        const [a0, a1, a2, a3] = got[0];
        assert.strictEqual(typeof a0.x.cb, 'function');
        assert.strictEqual(a2, a1);
        assert.strictEqual(a3.again, a1);
        assert.strictEqual({}.polluted, undefined);
        // The server culls one of our callbacks: it is forgotten.
        const fn = () => {};
        const id = c._idOf(fn);
        c._handle({ method: 'cull', arguments: [id] });
        assert.strictEqual(c._local[id], undefined);
    });

test('Backbone over DNode: CRUD, pushes, presence, errors, queries', { skip }, async () => {
    const [a, b] = await twoPages();
    const online = [];
    b.todos.on('subscribe', (n) => online.push(n));
    await subscribe(a.todos);
    await subscribe(b.todos);
    await until(() => online.includes(2) && a.todos.online === 2, 'two subscribers online');

    // Create in A: the reply gives it an _id; B gets it pushed.
    const one = await create(a.todos, { title: 'one', order: 1 });
    assert.match(one.id, /^[0-9a-f]{24}$/);
    assert.strictEqual(one.idAttribute, '_id');
    await until(() => b.todos.get(one.id), 'the created push in B');
    assert.strictEqual(b.todos.get(one.id).get('title'), 'one');
    assert.strictEqual(a.todos.length, 1, 'our own push did not add a duplicate');

    // Update in B, pushed to A.
    await save(b.todos.get(one.id), { completed: true }, { patch: true });
    await until(() => a.todos.get(one.id).get('completed') === true, 'the updated push in A');

    // The server's validation error reaches error() and the 'error' event.
    const errors = [];
    a.todos.on('error', (m, err) => errors.push(err));
    const bad = new a.Todo({ order: 3 });
    a.todos.add(bad);
    await assert.rejects(save(bad, {}), (err) => err.name === 'ValidationError' &&
        err.errors && err.errors.title && err.errors.title.kind === 'required');
    assert.strictEqual(errors.length, 1);
    a.todos.remove(bad);

    // fetch with a query and sorting.
    await create(a.todos, { title: 'two', order: 2, completed: true });
    await create(a.todos, { title: 'three', order: 3 });
    const c = new b.Todos();
    const got = await fetch(c, { query: { completed: true }, sorting: { sort: [['order', -1]] } });
    assert.deepStrictEqual(plain(got.map((t) => t.title)), ['two', 'one']);
    assert.deepStrictEqual(plain(c.pluck('title').sort()), ['one', 'two']);
    const limited = await fetch(new b.Todos(), { sorting: { sort: '-order', limit: 1 } });
    assert.deepStrictEqual(plain(limited.map((t) => t.title)), ['three']);

    // A model fetched alone, and subscribed alone: it follows its document.
    const solo = new b.Todo({ _id: one.id });
    solo.urlRoot = 'todos';
    await fetch(solo);
    assert.strictEqual(solo.get('title'), 'one');
    await subscribe(solo);
    await save(a.todos.get(one.id), { title: 'one, renamed' }, { patch: true });
    await until(() => solo.get('title') === 'one, renamed', 'the push to a lone model');

    // Delete in A: B's model is destroyed and leaves its collection.
    const destroyed = [];
    b.todos.get(one.id).on('destroy', () => destroyed.push(one.id));
    await new Promise((resolve, reject) => a.todos.get(one.id).destroy({
        finished: resolve, error: (m, err) => reject(err),
    }));
    await until(() => !b.todos.get(one.id), 'the deleted push in B');
    assert.deepStrictEqual(destroyed, [one.id]);
});

test('after a reconnection: resubscribed, caught up, queued calls sent', { skip }, async () => {
    const [a, b] = await twoPages();
    await subscribe(a.todos);
    await subscribe(b.todos);
    await fetch(a.todos);
    await fetch(b.todos, { sorting: { sort: [['order', 1]] } });
    const before = b.todos.length;

    // The server goes away and comes back.
    await d.stop();
    await until(() => a.events.includes('down') && b.events.includes('down'), 'both down');
    // A call made while down is queued and sent once connected again.
    const queued = create(a.todos, { title: 'made while down', order: 10 });
    await d.start();
    await until(() => a.events.filter((e) => e === 'ready').length >= 2 &&
        b.events.filter((e) => e === 'ready').length >= 2, 'both reconnected');
    const made = await queued;
    assert.match(made.id, /^[0-9a-f]{24}$/);
    // The refetch after reconnecting kept the model while its create was queued.
    assert.strictEqual(a.todos.get(made.id), made);
    // B, resubscribed (or refetched), has it.
    await until(() => b.todos.get(made.id), 'the change made during the outage in B');

    // B misses a change while it is disconnected, and catches up when back.
    b.conn.close();
    const missed = await create(a.todos, { title: 'missed by B', order: 11 });
    b.conn.connect({ minDelay: 50, maxDelay: 400 });
    await until(() => b.todos.get(missed.id), 'B catching up after reconnecting');
    assert.strictEqual(b.todos.length, before + 2);
    // And live pushes flow again.
    const live = await create(a.todos, { title: 'live again', order: 12 });
    await until(() => b.todos.get(live.id), 'live pushes after reconnecting');
});

test('a write whose answer is lost with the connection goes again with its request id: ' +
    'written once, answered, and the page catches up without a read', { skip }, async (t) => {
    // A proxy between the page and dnoded that, once armed, cuts both
    // sockets instead of passing the first server bytes naming the todo:
    // the create was written, its answer (and push) never arrive.
    const net = require('node:net');
    let armed = null;
    const proxy = net.createServer((client) => {
        const up = net.connect(d.port, '127.0.0.1');
        const cut = () => {
            client.destroy();
            up.destroy();
        };
        client.on('data', (c) => up.write(c));
        up.on('data', (c) => {
            if (armed && c.includes(armed)) {
                armed = null;
                cut();
                return;
            }
            client.write(c);
        });
        client.on('error', cut);
        up.on('error', cut);
        client.on('close', cut);
        up.on('close', cut);
    });
    await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
    t.after(() => proxy.close());
    const [a, b] = await twoPages(proxy.address().port);
    await subscribe(a.todos);
    await subscribe(b.todos);
    await fetch(a.todos);
    const sent = [];
    const call = a.conn.call.bind(a.conn);
    a.conn.call = (name, ...args) => {
        sent.push([name, plain(args.filter((x) => typeof x !== 'function'))]);
        return call(name, ...args);
    };
    const title = `cut write ${Date.now()}`;
    armed = title;
    const made = await create(a.todos, { title, order: 40 });
    assert.match(made.id, /^[0-9a-f]{24}$/);
    assert.ok(a.events.filter((e) => e === 'down').length >= 1, 'the connection was cut');
    const creates = sent.filter(([name]) => name === 'create');
    assert.strictEqual(creates.length, 2, 'sent again after the reconnection');
    assert.ok(creates[0][1][1].requestId, 'with a request id');
    assert.strictEqual(creates[1][1][1].requestId, creates[0][1][1].requestId, 'the same one');
    const stored = await fetch(b.todos, { query: { title } });
    assert.strictEqual(stored.length, 1, 'written once');
    assert.strictEqual(stored[0]._id, made.id);
    assert.strictEqual(a.todos.where({ title }).length, 1, 'one model in the page');
    assert.deepStrictEqual(sent.filter(([name]) => name === 'read'), [],
        'recovered from the channel\'s history, not read again');
    assert.ok(sent.some(([name, args]) => name === 'subscribe' && args[1] && args[1].since),
        'resubscribed from its position');
});

test('changes pushed while a fetch is in flight are not undone by its answer',
    { skip }, async () => {
        const [a, b] = await twoPages();
        await subscribe(a.todos);
        await subscribe(b.todos);
        const old = await create(a.todos, { title: 'before the fetch', order: 30 });
        await until(() => b.todos.get(old.id), 'the first push in B');

        // Hold back B's read answer (computed before the changes below).
        const handle = b.conn._handle.bind(b.conn);
        let held = null;
        b.conn._handle = (msg) => {
            if (held === null && typeof msg.method === 'number') {
                held = msg;
                return;
            }
            handle(msg);
        };
        const fetching = fetch(b.todos);
        await until(() => held, 'the read answer, held back');
        const made = await create(a.todos, { title: 'made during the fetch', order: 31 });
        await save(a.todos.get(old.id), { title: 'renamed during the fetch' }, { patch: true });
        await until(() => b.todos.get(made.id) &&
            b.todos.get(old.id).get('title') === 'renamed during the fetch', 'the pushes in B');
        b.conn._handle = handle;
        handle(held);
        await fetching;
        assert.ok(b.todos.get(made.id), 'the fetch removed a model pushed meanwhile');
        assert.strictEqual(b.todos.get(old.id).get('title'), 'renamed during the fetch');
    });

test('answered callbacks are released: the table of local callbacks stays small',
    { skip }, async () => {
        const p = page(d.port);
        pages.push(p);
        await until(() => p.conn.isReady(), 'the page ready');
        const base = Object.keys(p.conn._local).length; // our exported methods
        for (let i = 0; i < 20; i++) {
            await subscribe(p.todos);
            await fetch(p.todos, { query: { title: 'nothing like this' } });
            await new Promise((resolve) => p.todos.unsubscribe(resolve));
        }
        assert.strictEqual(Object.keys(p.conn._local).length, base);
    });
