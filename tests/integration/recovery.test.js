'use strict';
// Nothing missed: every change on a channel has a place in its history
// ({epoch, offset}), and a subscriber that comes back with
// subscribe(url, {since: {epoch, offset}}, fn) gets exactly the changes it
// missed, in order, before fn(null, {recovered: true, ...}), and none twice
// against the live stream; or, when they are not all in the history
// (too many, another epoch after a Redis flush), nothing and
// recovered: false. Over TCP and WebSocket, in single-host mode (publisher
// on the other worker) and Redis mode (publisher on the other host), with
// read rules applied to the replay, and a worker whose Redis subscription
// dropped catching up from the history.

const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startDnoded, stopAll, sleep, timeScale } = require('../lib/harness');
const { startRedis, getServices } = require('../lib/services');
const { redisCommand } = require('../lib/redis');
const { findProgram, waitFor } = require('../lib/proc');
const { WsConn, OP, httpGet } = require('../lib/raw_http');
const jwt = require('../lib/jwt');

const skipRedis = process.env.DNODED_TEST_REDIS_URL || findProgram('redis-server',
    'DNODED_TEST_REDIS_SERVER') ? false : 'needs redis-server (scripts/setup)';
const skipDb = process.env.DNODED_TEST_MONGODB_URI || findProgram('ferretdb', 'DNODED_TEST_FERRETDB')
    ? false : 'needs ferretdb (scripts/setup) or DNODED_TEST_MONGODB_URI';

// Publishing needs no database; a closed port keeps MongoDB out.
const NO_DB = 'mongodb://127.0.0.1:9/recovery_test';
const TIMEOUT = 15000 * timeScale;
const MISSED = 25;

const unique = (name) => `/recovery/${name}/${crypto.randomBytes(4).toString('hex')}`;

// A TCP subscriber (the harness' DNode client) exporting the pushes.
async function tcpSubscriber(t, d) {
    const c = await d.pushClient(t);
    return {
        subscribe: (url, opts) => c.invoke('subscribe', url, opts),
        created: (url) => c.received.filter((m) => m.name === 'created' && m.args[1].url === url)
            .map((m) => m.args),
        recovered: (url) => c.received.filter((m) => m.name === 'recovered' && m.args[0] === url)
            .map((m) => m.args[1]),
        close: () => c.close(),
    };
}

// A WebSocket subscriber exporting created (callback 0) and recovered (1).
async function wsSubscriber(t, d) {
    const c = await WsConn.open(d.port);
    t.after(() => c.close());
    const messages = [];
    let first = true;
    (async () => {
        for (;;) {
            let f;
            try {
                f = await c.nextFrame('a frame');
            } catch {
                return;
            }
            if (f.opcode === OP.CLOSE) {
                return;
            }
            if (f.opcode === OP.TEXT) {
                if (first) {
                    first = false;
                    c.sendJson({ method: 'methods',
                        arguments: [{ created: '[Function]', recovered: '[Function]' }],
                        callbacks: { 0: [0, 'created'], 1: [0, 'recovered'] } });
                }
                messages.push(JSON.parse(f.payload.toString('utf8')));
            }
        }
    })();
    await waitFor(() => messages.some((m) => m.method === 'methods'),
        { timeoutMs: TIMEOUT, what: 'the methods message over WebSocket' });
    let nextId = 100;
    // A push names the method, or the callback id it was exported as.
    const pushes = (id, url) => messages.filter((m) =>
        (m.method === id || m.method === ['created', 'recovered'][id]) &&
        (id === 0 ? m.arguments[1].url === url : m.arguments[0] === url));
    return {
        subscribe: async (url, opts) => {
            const id = nextId++;
            c.sendJson({ method: 'subscribe', arguments: [url, opts, '[Function]'],
                callbacks: { [id]: [2] } });
            const reply = await waitFor(() => messages.find((m) => m.method === id),
                { timeoutMs: TIMEOUT, what: 'the reply to subscribe' });
            return reply.arguments;
        },
        created: (url) => pushes(0, url).map((m) => m.arguments),
        recovered: (url) => pushes(1, url).map((m) => m.arguments[1]),
        close: () => c.close(),
    };
}

const transports = { TCP: tcpSubscriber, WebSocket: wsSubscriber };

// Publishes {i} for each i in from..to-1 on url, each acknowledged.
async function publishRange(pub, url, from, to) {
    for (let i = from; i < to; i++) {
        assert.deepStrictEqual(await pub.invoke('publish', { i }, { url, method: 'create' }),
            [null]);
    }
}

// Publishes {i, pad} on url from pub, one after the other, until stop():
// p.acked and p.failed hold the i of each answered null or refused, p.sent
// how many were sent; p.pad (a string) goes into each from then on.
function keepPublishing(pub, url) {
    const p = { acked: [], failed: [], sent: 0, pad: '', stopping: false };
    const done = (async () => {
        while (!p.stopping) {
            const i = p.sent++;
            const [err] = await pub.invoke('publish', { i, pad: p.pad }, { url, method: 'create' });
            if (err === null) {
                p.acked.push(i);
            } else {
                p.failed.push(i);
                await sleep(10);
            }
        }
    })();
    p.stop = async () => {
        p.stopping = true;
        await done;
    };
    return p;
}

async function waitCreated(sub, url, n) {
    await waitFor(() => sub.created(url).length >= n,
        { timeoutMs: TIMEOUT, what: `${n} changes on ${url} (have ${sub.created(url).length})` });
}

// The scenario of the issue: a subscriber sees some changes, goes away
// while MISSED more are published elsewhere, and comes back from where it
// was. `where` gives (t) => { subAt, pubAt }: the dnoded (or worker) each
// connects to.
async function missedWhileAway(t, connect, where) {
    const { subAt, pubAt } = await where(t);
    const url = unique('away');
    const pub = await pubAt(t);
    const before = await connect(t, await subAt());
    const [err, pos0] = await before.subscribe(url, {});
    assert.strictEqual(err, null);
    assert.match(pos0.epoch, /^[0-9a-f]+$/, 'the channel has an epoch');
    assert.ok(Number.isInteger(pos0.offset), 'and an offset');
    await publishRange(pub, url, 0, 3);
    await waitCreated(before, url, 3);
    const seen = before.created(url).map(([, opt]) => opt.offset);
    assert.deepStrictEqual(seen, [pos0.offset + 1, pos0.offset + 2, pos0.offset + 3],
        'offsets follow the position subscribe answered, one per change');
    const since = { epoch: before.created(url)[2][1].epoch, offset: seen[2] };
    await before.close();

    await publishRange(pub, url, 3, 3 + MISSED);
    const after = await connect(t, await subAt());
    const [err2, info] = await after.subscribe(url, { since });
    assert.strictEqual(err2, null);
    // Replayed before the answer, in order, exactly the missed ones.
    const replay = after.created(url);
    assert.deepStrictEqual(replay.map(([doc]) => doc.i), [...Array(MISSED).keys()].map((k) => k + 3));
    assert.deepStrictEqual(replay.map(([, opt]) => opt.offset),
        [...Array(MISSED).keys()].map((k) => since.offset + 1 + k));
    assert.deepStrictEqual(info, { recovered: true, epoch: since.epoch,
        offset: since.offset + MISSED });
    // The live stream goes on from there, nothing twice.
    await publishRange(pub, url, 3 + MISSED, 5 + MISSED);
    await waitCreated(after, url, MISSED + 2);
    await sleep(200);
    assert.deepStrictEqual(after.created(url).map(([doc]) => doc.i),
        [...Array(MISSED + 2).keys()].map((k) => k + 3));
    assert.deepStrictEqual(after.recovered(url), []);
}

// A replay larger than one fetch may carry (4 MiB of payloads): twelve
// changes of 600 KB each, missed by a subscriber of subAt published from
// pub, come back whole, in order, over several fetches.
async function bigReplay(t, subAt, pub) {
    const url = unique('big');
    const away = await tcpSubscriber(t, subAt);
    const [, pos] = await away.subscribe(url, {});
    await away.close();
    const pad = 'y'.repeat(600000);
    for (let i = 0; i < 12; i++) {
        assert.deepStrictEqual(await pub.invoke('publish', { i, pad }, { url, method: 'create' }),
            [null]);
    }
    const back = await tcpSubscriber(t, subAt);
    const [err, info] = await back.subscribe(url, { since: pos });
    assert.strictEqual(err, null);
    assert.deepStrictEqual(info, { recovered: true, epoch: pos.epoch, offset: pos.offset + 12 });
    const replay = back.created(url);
    assert.deepStrictEqual(replay.map(([doc]) => doc.i), [...Array(12).keys()]);
    assert.deepStrictEqual(replay.map(([, opt]) => opt.offset),
        [...Array(12).keys()].map((k) => pos.offset + 1 + k));
    assert.ok(replay.every(([doc]) => doc.pad === pad), 'every payload whole');
}

// A dnoded with two workers; a client's worker is picked by stopping the other.
async function twoWorkers(t, config = {}) {
    const d = await startDnoded({ mongodbUri: NO_DB, config: { workers: 2, ...config } }, t);
    const [w0, w1] = await d.waitWorkers(2);
    return {
        d,
        on: (pid) => (fn) => d.withOnlyWorker(pid, fn),
        w0,
        w1,
    };
}

test.describe('single-host mode', () => {
    for (const [name, connect] of Object.entries(transports)) {
        test(`${name}: a subscriber back after a drop gets exactly the changes published ` +
            'on the other worker meanwhile', async (t) => {
            const h = await twoWorkers(t);
            await missedWhileAway(t, (tt, d) => h.on(h.w0)(() => connect(tt, d)), async () => ({
                subAt: async () => h.d,
                pubAt: (tt) => h.on(h.w1)(() => h.d.pushClient(tt)),
            }));
        });
    }

    test('a replay past one fetch\'s 4 MiB comes back whole over several', async (t) => {
        const d = await startDnoded({ mongodbUri: NO_DB }, t);
        await bigReplay(t, d, await d.pushClient(t));
    });

    test('past history_size nothing is replayed, and the answer says recovered: false',
        async (t) => {
            const h = await twoWorkers(t, { history_size: 10 });
            const url = unique('too-many');
            const pub = await h.on(h.w1)(() => h.d.pushClient(t));
            const sub = await h.on(h.w0)(() => tcpSubscriber(t, h.d));
            const [, pos] = await sub.subscribe(url, {});
            await sub.close();
            await publishRange(pub, url, 0, 11);
            const back = await tcpSubscriber(t, h.d);
            const [err, info] = await back.subscribe(url, { since: pos });
            assert.strictEqual(err, null);
            assert.deepStrictEqual(info, { recovered: false, epoch: pos.epoch,
                offset: pos.offset + 11 });
            assert.deepStrictEqual(back.created(url), [], 'nothing partial');
            // Ten back is still whole.
            const again = await tcpSubscriber(t, h.d);
            const [, ok] = await again.subscribe(url, { since: { ...pos, offset: pos.offset + 1 } });
            assert.strictEqual(ok.recovered, true);
            assert.strictEqual(again.created(url).length, 10);
            // Both answers are counted, summed over the workers.
            const text = (await httpGet(h.d.port, '/metrics')).text;
            const value = (name) => Number((new RegExp(`^${name} (\\d+)$`, 'm').exec(text) || [])[1]);
            assert.strictEqual(value('dnoded_bus_recovered_total'), 1, text);
            assert.strictEqual(value('dnoded_bus_not_recovered_total'), 1);
        });

    test('a subscriber that missed nothing recovers with nothing to replay; a bad since is ' +
        'refused', async (t) => {
        const d = await startDnoded({ mongodbUri: NO_DB }, t);
        const url = unique('nothing');
        const sub = await tcpSubscriber(t, d);
        const [, pos] = await sub.subscribe(url, {});
        const again = await tcpSubscriber(t, d);
        assert.deepStrictEqual(await again.subscribe(url, { since: pos }),
            [null, { recovered: true, ...pos }]);
        assert.deepStrictEqual(await again.subscribe(url, { since: { epoch: 'nope', offset: 0 } }),
            [null, { recovered: false, ...pos }], 'already subscribed: where it stands');
        for (const since of [{ epoch: 'x' }, { epoch: 7, offset: 1 }, { epoch: 'a"b', offset: 1 },
            { epoch: 'e', offset: -1 }, { epoch: 'e', offset: 1.5 }, 'str']) {
            const [err] = await again.subscribe(`${url}/bad`, { since });
            assert.match(String(err), /invalid since/, JSON.stringify(since));
        }
        const other = await tcpSubscriber(t, d);
        assert.deepStrictEqual(await other.subscribe(url, { since: { epoch: 'zzz', offset: 3 } }),
            [null, { recovered: false, ...pos }], 'another epoch: nothing, recovered false');
    });
});

test.describe('Redis mode: two hosts on one Redis', { skip: skipRedis }, () => {
    let redis;
    let a;
    let b;

    test.before(async () => {
        redis = await startRedis();
        const opts = { redisUrl: redis.url, mongodbUri: NO_DB,
            config: { history_size: 5000 } };
        a = await startDnoded({ ...opts, redisReady: true });
        b = await startDnoded({ ...opts, redisReady: true });
    });

    test.after(() => stopAll([a, b], [redis]));

    for (const [name, connect] of Object.entries(transports)) {
        test(`${name}: a subscriber back after a drop gets exactly the changes published ` +
            'on the other host meanwhile', async (t) => {
            await missedWhileAway(t, connect, async () => ({
                subAt: async () => a,
                pubAt: (tt) => b.pushClient(tt),
            }));
        });
    }

    test('a second subscribe sent before the first is answered is answered too', async (t) => {
        const url = unique('twice');
        const c = await a.pushClient(t);
        // Redis holds the first one's SUBSCRIBE while the second arrives.
        await redisCommand(redis.url, 'CLIENT', 'PAUSE', '500', 'ALL');
        const [first, second] = await Promise.all([c.invoke('subscribe', url, {}),
            sleep(100).then(() => c.invoke('subscribe', url, {}))]);
        assert.strictEqual(first[0], null);
        assert.match(first[1].epoch, /^[0-9a-f]+$/);
        assert.strictEqual(second[0], null, 'answered, with or without a position yet');
    });

    test('a replay past one fetch\'s 4 MiB comes back whole over several', async (t) => {
        await bigReplay(t, a, await b.pushClient(t));
    });

    test('history fetches count against max_inflight_per_session: past it, the session\'s ' +
        'next requests wait', async (t) => {
        // A client pipelining subscribe-with-since could otherwise keep any
        // number of fetches (each up to history_size changes) out at once.
        const d = await startDnoded({ redisUrl: redis.url, mongodbUri: NO_DB, redisReady: true,
            config: { max_inflight_per_session: 2 } }, t);
        const c = await d.pushClient(t);
        const since = { epoch: 'e0', offset: 1 };
        const held = 1500;
        await redisCommand(redis.url, 'CLIENT', 'PAUSE', String(held), 'ALL');
        const t0 = Date.now();
        const fetches = [1, 2, 3].map((i) => c.invoke('subscribe', unique(`held${i}`), { since }));
        // answered without Redis, but only once the session reads again
        const [err] = await c.invoke('unsubscribe', unique('never'));
        const waited = Date.now() - t0;
        assert.strictEqual(err, null);
        assert.ok(waited >= held - 300, `answered after ${waited} ms, while two fetches were out`);
        for (const [e, info] of await Promise.all(fetches)) {
            assert.strictEqual(e, null);
            assert.strictEqual(info.recovered, false);
        }
    });

    test('a reload waits for a session\'s history fetch: its subscribe is answered, then it moves',
        async (t) => {
            const d = await startDnoded({ redisUrl: redis.url, mongodbUri: NO_DB, redisReady: true,
                config: { workers: 1 } }, t);
            const c = await d.pushClient(t);
            const url = unique('reload-fetch');
            await redisCommand(redis.url, 'CLIENT', 'PAUSE', '1500', 'ALL');
            const answer = c.invoke('subscribe', url, { since: { epoch: 'e0', offset: 1 } });
            await sleep(200); // the fetch is out, held by Redis
            const since = d.stderr().length;
            d.signal('SIGHUP');
            await d.waitForLog(/reloaded: generation 2 started/, { since, timeoutMs: TIMEOUT });
            const [err, info] = await Promise.race([answer, sleep(TIMEOUT).then(() => ['no answer'])]);
            assert.strictEqual(err, null);
            assert.strictEqual(info.recovered, false);
            // and the session carries on in the new generation
            const [err2] = await c.invoke('unsubscribe', url);
            assert.strictEqual(err2, null);
        });

    test('after a Redis flush: recovered false, nothing replayed; live subscribers are told',
        async (t) => {
            const url = unique('flush');
            const pub = await b.pushClient(t);
            const live = await tcpSubscriber(t, a);
            const [, pos] = await live.subscribe(url, {});
            const gone = await tcpSubscriber(t, a);
            await gone.subscribe(url, {});
            await publishRange(pub, url, 0, 2);
            await waitCreated(live, url, 2);
            const since = { epoch: pos.epoch, offset: pos.offset + 2 };
            await gone.close();
            await redisCommand(redis.url, 'FLUSHALL');
            await publishRange(pub, url, 2, 4);
            await waitCreated(live, url, 4);
            const [told] = live.recovered(url);
            assert.ok(told, 'the live subscriber was told its history is gone');
            assert.strictEqual(told.recovered, false);
            assert.notStrictEqual(told.epoch, pos.epoch, 'a new epoch');
            const back = await tcpSubscriber(t, a);
            const [, info] = await back.subscribe(url, { since });
            assert.strictEqual(info.recovered, false);
            assert.strictEqual(info.epoch, told.epoch);
            assert.deepStrictEqual(back.created(url), [], 'nothing partial');
        });

    test('a worker whose Redis subscription drops catches up from the history: every ' +
        'acknowledged change arrives once, in order', async (t) => {
        const url = unique('catch-up');
        const pub = await b.pushClient(t);
        const sub = await tcpSubscriber(t, a);
        await sub.subscribe(url, {});
        const p = keepPublishing(pub, url);
        await waitFor(() => p.acked.length >= 50, { timeoutMs: TIMEOUT, what: '50 publishes' });
        // Host a's worker stalls; Redis drops its subscriber connection as a
        // slow consumer, and a misses what b publishes until it is back.
        const [worker] = a.workerPids();
        const limits = await redisCommand(redis.url, 'CONFIG', 'GET', 'client-output-buffer-limit');
        await redisCommand(redis.url, 'CONFIG', 'SET', 'client-output-buffer-limit',
            'pubsub 4kb 4kb 0');
        const subscribers = async () => String(await redisCommand(redis.url, 'CLIENT', 'LIST',
            'TYPE', 'pubsub')).split('\n').filter((l) => l.trim()).length;
        const before = await subscribers();
        const since = a.stderr().length;
        process.kill(worker, 'SIGSTOP');
        try {
            // Past the kernel's socket buffers too: the receive side alone
            // may grow to tcp_rmem's maximum (32 MB here) before Redis holds
            // anything, and one publish is in flight at a time, slow on a
            // loaded machine.
            p.pad = 'x'.repeat(65536);
            await waitFor(async () => await subscribers() < before,
                { timeoutMs: 3 * TIMEOUT, what: 'Redis dropping the stalled subscriber' });
            p.pad = '';
        } finally {
            process.kill(worker, 'SIGCONT');
            await redisCommand(redis.url, 'CONFIG', 'SET', 'client-output-buffer-limit', limits[1]);
        }
        await a.waitForLog(/bus: Redis is back/, { timeoutMs: TIMEOUT, since });
        const resumed = p.acked.length;
        await waitFor(() => p.acked.length >= resumed + 50, { timeoutMs: TIMEOUT, what: '50 more' });
        await p.stop();
        assert.deepStrictEqual(p.failed, [], 'host b stayed connected');
        await waitCreated(sub, url, p.acked.length);
        await sleep(300);
        assert.deepStrictEqual(sub.created(url).map(([doc]) => doc.i), p.acked);
        assert.deepStrictEqual(sub.recovered(url), [], 'nothing was lost');
    });

    test('a change whose publish failed is announced as lost in the channel\'s history, ' +
        'in the same epoch', async (t) => {
        const url = unique('lost');
        const pub = await b.pushClient(t);
        const sub = await tcpSubscriber(t, a);
        const [, pos] = await sub.subscribe(url, {});
        const p = keepPublishing(pub, url);
        await waitFor(() => p.sent >= 20, { timeoutMs: TIMEOUT, what: '20 publishes' });
        // Every command connection goes (both hosts'); Redis keeps its data.
        const since = b.stderr().length;
        await redisCommand(redis.url, 'CLIENT', 'KILL', 'TYPE', 'normal');
        await b.waitForLog(/bus: Redis is back/, { timeoutMs: TIMEOUT, since });
        await waitFor(() => p.failed.length > 0 || p.sent > 400,
            { timeoutMs: TIMEOUT, what: 'more' });
        await p.stop();
        if (p.failed.length === 0) {
            t.diagnostic('no publish failed this time: nothing to announce');
            return;
        }
        await waitFor(() => sub.recovered(url).length > 0,
            { timeoutMs: TIMEOUT, what: 'the subscriber told of the lost change' });
        const [told] = sub.recovered(url);
        assert.strictEqual(told.recovered, false);
        assert.strictEqual(told.epoch, pos.epoch, 'the history itself was kept');
        // A subscriber coming back from before the loss cannot recover
        // across it: never a partial replay.
        const back = await tcpSubscriber(t, a);
        const [, info] = await back.subscribe(url, { since: pos });
        assert.strictEqual(info.recovered, false);
        assert.deepStrictEqual(back.created(url), []);
    });

    test('Redis restarted during publishing: a subscriber gets every acknowledged change, ' +
        'or is told recovered: false', async (t) => {
        const url = unique('restart');
        const pub = await b.pushClient(t);
        const sub = await tcpSubscriber(t, a);
        await sub.subscribe(url, {});
        const p = keepPublishing(pub, url);
        const acked = p.acked;
        await waitFor(() => acked.length >= 30, { timeoutMs: TIMEOUT, what: '30 publishes' });
        const since = a.stderr().length;
        await redis.stop();
        await sleep(300);
        await redis.start();
        await a.waitForLog(/bus: Redis is back/, { timeoutMs: TIMEOUT, since });
        const resumed = acked.length;
        await waitFor(() => acked.length >= resumed + 30, { timeoutMs: TIMEOUT, what: 'more' });
        await p.stop();
        // Wait until it has the last acknowledged change, or was told
        // that it lost some.
        await waitFor(() => sub.created(url).some(([doc]) => doc.i === acked[acked.length - 1]) ||
            sub.recovered(url).length > 0, { timeoutMs: TIMEOUT, what: 'the last change' });
        await sleep(300);
        const got = new Set(sub.created(url).map(([doc]) => doc.i));
        const missing = acked.filter((n) => !got.has(n));
        if (missing.length > 0) {
            assert.ok(sub.recovered(url).some((r) => r.recovered === false),
                `${missing.length} acknowledged changes missing, and no recovered: false`);
        }
        // A restarted Redis starts the channel's history over (a new epoch,
        // which the subscriber is told of): within an epoch, in order, once.
        const epochs = new Map();
        for (const [, opt] of sub.created(url)) {
            epochs.set(opt.epoch, [...(epochs.get(opt.epoch) || []), opt.offset]);
        }
        for (const order of epochs.values()) {
            assert.deepStrictEqual(order, [...order].sort((x, y) => x - y), 'in order');
            assert.strictEqual(new Set(order).size, order.length, 'none twice');
        }
        if (epochs.size > 1) {
            assert.ok(sub.recovered(url).some((r) => r.recovered === false),
                'a new epoch is announced');
        }
    });
});

test('the replay obeys the read rules, as live pushes do', { skip: skipDb }, async (t) => {
    const services = await getServices({ redis: false, label: 'recovery' });
    t.after(() => services.close());
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-recovery-'));
    const secret = crypto.randomBytes(32).toString('hex');
    fs.writeFileSync(path.join(dir, 'auth.key'), secret);
    const d = await startDnoded({
        services,
        models: {
            note: {
                collection: `recnotes${crypto.randomBytes(3).toString('hex')}`,
                fields: {
                    title: 'String',
                    shared: { type: 'Boolean', default: false },
                    owner: { type: 'String', set_from: 'auth.sub' },
                    secret: { type: 'String', hidden: 'doc.owner != auth.sub' },
                },
                rules: { read: 'doc.shared || doc.owner == auth.sub', create: 'auth.sub != null' },
            },
        },
        config: { auth_key: path.join(dir, 'auth.key') },
    }, t);
    const as = async (sub) => {
        const c = await d.pushClient(t);
        const [err] = await c.invoke('auth', jwt.sign(jwt.claims({ sub }), secret));
        assert.strictEqual(err, null);
        return c;
    };
    const url = unique('rules');
    const ann = await as('ann');
    let bob = await as('bob');
    const [, pos] = await bob.invoke('subscribe', url, {});
    await bob.close();
    for (const [title, shared] of [['a', false], ['b', true], ['c', false], ['d', true]]) {
        const [doc] = await ann.invoke('create', { title, shared, secret: 's' },
            { type: 'note', url });
        assert.strictEqual(doc.title, title);
    }
    bob = await as('bob');
    const [err, info] = await bob.invoke('subscribe', url, { since: pos });
    assert.strictEqual(err, null);
    assert.deepStrictEqual(info, { recovered: true, epoch: pos.epoch, offset: pos.offset + 4 });
    const replay = bob.received.filter((m) => m.name === 'created').map((m) => m.args[0]);
    assert.deepStrictEqual(replay.map((doc) => doc.title), ['b', 'd'], 'only what bob may read');
    assert.ok(replay.every((doc) => doc.secret === undefined), 'hidden fields removed');
});
