'use strict';
// The bus across processes: two dnoded instances on one Redis act as two
// hosts (delivery exactly once, one order per channel for every subscriber,
// deployment-wide presence counts including a killed host, and recovery
// after Redis restarts), and the same delivery and order guarantees in
// single-host mode, across the sessions of one worker and across workers.
// Clients are the raw TCP DNode client of tests/lib/harness.js.

const test = require('node:test');
const assert = require('node:assert');

const { startDnoded, stopAll, sleep, timeScale } = require('../lib/harness');
const { startRedis } = require('../lib/services');
const { redisCommand } = require('../lib/redis');
const { findProgram, waitFor } = require('../lib/proc');

const skip = process.env.DNODED_TEST_REDIS_URL || findProgram('redis-server',
    'DNODED_TEST_REDIS_SERVER') ? false : 'needs redis-server (scripts/setup)';

// Publishing needs no database; the store connects lazily, so a closed
// port keeps MongoDB out of these tests.
const NO_DB = 'mongodb://127.0.0.1:9/bus_test';
const PER_PUBLISHER = 500;
// How long a crashed host's presence may linger (HACKING.md: 15 s), plus slack.
const PRESENCE_BOUND_MS = 25000 * timeScale;

async function client(t, d) {
    // Distinct functions: the client gives one function one callback id.
    const methods = {};
    for (const name of ['created', 'updated', 'deleted', 'subscribed', 'unsubscribed', 'error']) {
        methods[name] = () => {};
    }
    const c = await d.connect({ methods });
    t.after(() => c.close());
    await c.ready;
    return c;
}

function calls(c, name, url) {
    return c.received.filter((m) => m.name === name && (url === undefined ||
        (name === 'created' ? m.args[1].url === url : m.args[0] === url)));
}

// Subscribes and waits for the client's own subscribed(url, n) push, which
// is when the subscription is in effect deployment-wide. Returns n.
async function join(c, url) {
    const before = calls(c, 'subscribed', url).length;
    assert.deepStrictEqual(await c.invoke('subscribe', url), [null]);
    await waitFor(() => calls(c, 'subscribed', url).length > before,
        { timeoutMs: 10000 * timeScale, what: `subscribed(${url})` });
    return calls(c, 'subscribed', url)[before].args[1];
}

// The next presence push of kind name on url that c has not been asked about.
async function nextPresence(c, name, url) {
    const msg = await c.next((m) => m.name === name && m.args[0] === url,
        { what: `${name}(${url})`, timeoutMs: PRESENCE_BOUND_MS });
    return msg.args[1];
}

function publish(c, url, doc) {
    c.call('publish', doc, { url, method: 'create' });
}

// Waits until every client in subs saw `count` created calls on url.
async function waitCreated(subs, url, count) {
    await waitFor(() => subs.every((s) => calls(s, 'created', url).length >= count), {
        timeoutMs: 60000 * timeScale,
        what: `${count} messages on ${url} at every subscriber (have ` +
            `${subs.map((s) => calls(s, 'created', url).length)})`,
    });
}

// Two publishers interleave PER_PUBLISHER messages each on one channel; every
// subscriber must get all of them once, each publisher's in its order, and
// all subscribers the same overall order.
async function checkOrder(pubs, subs, url) {
    for (let i = 0; i < PER_PUBLISHER; i++) {
        pubs.forEach((p, k) => publish(p, url, { p: k, i }));
    }
    // A marker per publisher, sent last: once every subscriber has both, the
    // count below must be exact (no duplicates trickling in afterwards).
    pubs.forEach((p, k) => publish(p, url, { p: k, end: true }));
    const total = pubs.length * (PER_PUBLISHER + 1);
    await waitCreated(subs, url, total);
    await sleep(200);
    const seqs = subs.map((s) => calls(s, 'created', url).map((m) => m.args[0]));
    for (const seq of seqs) {
        assert.strictEqual(seq.length, total, 'each message delivered exactly once');
        for (let k = 0; k < pubs.length; k++) {
            const mine = seq.filter((d) => d.p === k && !d.end).map((d) => d.i);
            assert.deepStrictEqual(mine, [...Array(PER_PUBLISHER).keys()],
                `publisher ${k}'s messages complete and in its order`);
        }
    }
    const key = (seq) => seq.map((d) => `${d.p}:${d.end ? 'end' : d.i}`).join(',');
    for (let j = 1; j < seqs.length; j++) {
        assert.strictEqual(key(seqs[j]), key(seqs[0]), `subscriber ${j} saw the same order`);
    }
}

test.describe('Redis mode: two hosts on one Redis', { skip }, () => {
    let redis;
    let a;
    let b;

    test.before(async () => {
        redis = await startRedis();
        const opts = { redisUrl: redis.url, mongodbUri: NO_DB };
        a = await startDnoded({ ...opts, redisReady: true });
        b = await startDnoded({ ...opts, redisReady: true });
    });

    test.after(() => stopAll([a, b], [redis]));

    test('a subscriber on one host receives what a client of the other publishes, once',
        async (t) => {
            const sub = await client(t, a);
            const pub = await client(t, b);
            assert.strictEqual(await join(sub, '/x'), 1);
            assert.deepStrictEqual(await pub.invoke('publish', { n: 1, f: () => {} },
                { url: '/x', method: 'create', cb: () => {} }), [null]);
            const msg = await sub.next((m) => m.name === 'created');
            const { epoch, offset } = msg.args[1];
            assert.deepStrictEqual(msg.args,
                [{ n: 1 }, { url: '/x', method: 'create', epoch, offset }]);
            assert.ok(Number.isInteger(offset) && offset > 0, 'a place in the history');
            publish(pub, '/x', { n: 2 });
            await waitFor(() => calls(sub, 'created', '/x').length >= 2, { what: 'second' });
            await sleep(200);
            assert.deepStrictEqual(calls(sub, 'created', '/x').map((m) => m.args[0].n), [1, 2]);
            assert.deepStrictEqual(calls(sub, 'created', '/x').map((m) => m.args[1].offset),
                [offset, offset + 1], 'offsets count the changes, one by one');
            // The publisher, not subscribed, got nothing pushed.
            assert.strictEqual(calls(pub, 'created').length, 0);
        });

    test('interleaved publishers on both hosts: three subscribers see one order',
        async (t) => {
            const url = '/order';
            const subs = [await client(t, a), await client(t, b), await client(t, a)];
            for (const s of subs) {
                await join(s, url);
            }
            await checkOrder([await client(t, a), await client(t, b)], subs, url);
        });

    test('leaving and joining again at once keeps the subscription', async (t) => {
        const url = '/rejoin';
        const sub = await client(t, a);
        const pub = await client(t, b);
        // While the worker's SUBSCRIBE is in flight ...
        sub.call('subscribe', url);
        sub.call('unsubscribe', url);
        assert.deepStrictEqual(await sub.invoke('subscribe', url), [null]);
        await waitFor(() => calls(sub, 'subscribed', url).length === 2, { what: 'two joins' });
        // ... and while its UNSUBSCRIBE is.
        sub.call('unsubscribe', url);
        assert.deepStrictEqual(await sub.invoke('subscribe', url), [null]);
        await waitFor(() => calls(sub, 'subscribed', url).length === 3, { what: 'third join' });
        assert.deepStrictEqual(calls(sub, 'subscribed', url).map((m) => m.args[1]), [1, 1, 1]);
        publish(pub, url, { n: 1 });
        publish(pub, url, { n: 2 });
        await waitFor(() => calls(sub, 'created', url).length >= 2, { what: 'two messages' });
        await sleep(200);
        assert.deepStrictEqual(calls(sub, 'created', url).map((m) => m.args[0].n), [1, 2]);
    });

    test('presence counts follow joins, leaves, disconnects and a killed host', async (t) => {
        const url = '/room';
        const a1 = await client(t, a);
        const a2 = await client(t, a);
        const b1 = await client(t, b);
        assert.strictEqual(await join(a1, url), 1);
        assert.strictEqual(await join(b1, url), 2);
        assert.strictEqual(await nextPresence(a1, 'subscribed', url), 1); // its own
        assert.strictEqual(await nextPresence(a1, 'subscribed', url), 2);
        assert.strictEqual(await join(a2, url), 3);
        assert.strictEqual(await nextPresence(a1, 'subscribed', url), 3);
        assert.deepStrictEqual(await b1.invoke('unsubscribe', url), [null]);
        assert.strictEqual(await nextPresence(a1, 'unsubscribed', url), 2);
        assert.strictEqual(await nextPresence(a2, 'unsubscribed', url), 2);
        a2.close();
        assert.strictEqual(await nextPresence(a1, 'unsubscribed', url), 1);
        // One session leaving did not unsubscribe its worker from Redis.
        publish(b1, url, { n: 'still' });
        await a1.next((m) => m.name === 'created', { what: 'a message after a2 left' });
        // Two sessions on b, then b dies without a word.
        const b2 = await client(t, b);
        const b3 = await client(t, b);
        assert.strictEqual(await join(b2, url), 2);
        assert.strictEqual(await join(b3, url), 3);
        assert.strictEqual(await nextPresence(a1, 'subscribed', url), 2);
        assert.strictEqual(await nextPresence(a1, 'subscribed', url), 3);
        await b.kill();
        await b.close();
        assert.strictEqual(await nextPresence(a1, 'unsubscribed', url), 1);
        // A new host joining sees the corrected count.
        b = await startDnoded({ redisUrl: redis.url, mongodbUri: NO_DB, redisReady: true });
        const b4 = await client(t, b);
        assert.strictEqual(await join(b4, url), 2);
    });

    test('a Redis that stops answering is detected and left for a fresh connection',
        async (t) => {
            const url = '/halfopen';
            const sub = await client(t, a);
            const pub = await client(t, b);
            await join(sub, url);
            const logA = a.stderr().length;
            // The connections stay open but nothing is answered: only the
            // liveness probe can tell.
            await redisCommand(redis.url, 'CLIENT', 'PAUSE', String(6000 * timeScale), 'ALL');
            await a.waitForLog(/no answer to the liveness probe/, { since: logA });
            await a.waitForLog(/bus: Redis is back/, { since: logA, timeoutMs: 30000 * timeScale });
            await waitFor(() => {
                publish(pub, url, { n: 'after' });
                return calls(sub, 'created', url).length > 0;
            }, { timeoutMs: 20000 * timeScale, intervalMs: 200, what: 'delivery to resume' });
        });

    test('Redis stopped and restarted mid-stream: publishes fail visibly, then delivery resumes',
        async (t) => {
            const url = '/outage';
            const sub = await client(t, a);
            const pub = await client(t, b);
            await join(sub, url);
            publish(pub, url, { n: 'before' });
            await sub.next((m) => m.name === 'created', { what: 'the message before' });
            const logA = a.stderr().length;
            const logB = b.stderr().length;
            await redis.stop();
            await b.waitForLog(/bus: Redis .* unavailable/, { since: logB });
            assert.deepStrictEqual(await pub.invoke('publish', { n: 'during' },
                { url, method: 'create' }), ['publish failed']);
            await redis.start();
            await a.waitForLog(/bus: Redis is back/, { since: logA, timeoutMs: 20000 * timeScale });
            await b.waitForLog(/bus: Redis is back/, { since: logB, timeoutMs: 20000 * timeScale });
            // Resubscription is asynchronous: publish until one gets through.
            let i = 0;
            await waitFor(() => {
                publish(pub, url, { n: 'after', i: i++ });
                return calls(sub, 'created', url).some((m) => m.args[0].n === 'after');
            }, { timeoutMs: 20000 * timeScale, intervalMs: 200, what: 'delivery to resume' });
            const first = calls(sub, 'created', url).find((m) => m.args[0].n === 'after').args[0].i;
            publish(pub, url, { n: 'last' });
            await waitFor(() => calls(sub, 'created', url).some((m) => m.args[0].n === 'last'),
                { what: 'the last message' });
            const ns = calls(sub, 'created', url).map((m) => m.args[0]);
            assert.ok(!ns.some((d) => d.n === 'during'), 'the refused publish was not delivered');
            const after = ns.filter((d) => d.n === 'after').map((d) => d.i);
            assert.deepStrictEqual(after, [...Array(i).keys()].slice(first, first + after.length),
                'no duplicates after the restart');
            assert.strictEqual(ns[ns.length - 1].n, 'last');
            assert.ok(a.running && b.running, 'no dnoded restarted');
            const metrics = await (await fetch(`${b.url}metrics`)).text();
            const failed = /^dnoded_bus_publish_failed_total (\d+)$/m.exec(metrics);
            assert.ok(failed && Number(failed[1]) >= 1, 'the failed publish is counted');
            assert.match(metrics, /^dnoded_bus_redis_reconnects_total [1-9]/m);
        });
});

test.describe('single-host mode', () => {
    test('one worker: exactly once and one order across its sessions', async (t) => {
        const d = await startDnoded({ mongodbUri: NO_DB }, t);
        const url = '/local-order';
        const subs = [await client(t, d), await client(t, d), await client(t, d)];
        for (const s of subs) {
            await join(s, url);
        }
        await checkOrder([await client(t, d), await client(t, d)], subs, url);
    });

    // Needs the master to hand bus_host_new() to its workers (HACKING.md,
    // "The bus"); without it each worker has a private relay and the
    // host-wide count fails.
    test('two workers: exactly once, one order and host-wide presence', async (t) => {
        const d = await startDnoded({ mongodbUri: NO_DB,
            config: { workers: 2, log_level: 'debug' } }, t);
        const url = '/workers-order';
        // Which worker took a connection, from its "connected" debug line.
        const workerOf = async (c) => {
            const port = c.sock.localPort;
            const re = new RegExp(`\\[worker (\\d+)\\].*:${port}:? connected`);
            const line = await d.waitForLog(re);
            return line.match(/\[worker (\d+)\]/)[1];
        };
        // Three connections on each worker: the other one is stopped while
        // they connect, so the kernel cannot put them all on one.
        const byWorker = new Map();
        for (const pid of await d.waitWorkers(2)) {
            await d.withOnlyWorker(pid, async () => {
                for (let i = 0; i < 3; i++) {
                    const c = await client(t, d);
                    const w = await workerOf(c);
                    byWorker.set(w, [...(byWorker.get(w) || []), c]);
                }
            });
        }
        assert.strictEqual(byWorker.size, 2, 'connections reached both workers');
        assert.ok([...byWorker.values()].every((l) => l.length === 3), 'three on each worker');
        const [w0, w1] = [...byWorker.values()];
        const subs = [w0[0], w1[0], w0[1], w1[1]];
        for (let i = 0; i < subs.length; i++) {
            assert.strictEqual(await join(subs[i], url), i + 1, 'online counts the whole host');
        }
        await checkOrder([w0[2], w1[2]], subs, url);
    });
});
