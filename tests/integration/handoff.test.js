'use strict';
// Reload hands sessions over instead of closing them (HACKING.md, "Reload
// without closing"): subscribers over TCP and WebSocket that stay connected
// across a reload receive every message of a publisher that keeps
// publishing through it, exactly once and in order, in single-host mode and
// in Redis mode; presence counts move with the sessions without a push; a
// connection that has not said anything yet survives too; and a graceful
// stop still closes sessions. Needs no database (publish only).

const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');

const { startDnoded, sleep, timeScale } = require('../lib/harness');
const { startRedis } = require('../lib/services');
const { WsConn, OP, frame } = require('../lib/raw_http');
const { findProgram, waitFor } = require('../lib/proc');

const skipRedis = process.env.DNODED_TEST_REDIS_URL || findProgram('redis-server',
    'DNODED_TEST_REDIS_SERVER') ? false : 'needs redis-server (scripts/setup)';

const NO_DB = 'mongodb://127.0.0.1:9/handoff_test';
const TIMEOUT = 30000 * timeScale;

// A TCP DNode client exporting every pushed method.
function tcpClient(t, d) {
    return d.pushClient(t, { methods: { error() {} }, timeoutMs: TIMEOUT });
}

function tcpCalls(c, name, url) {
    return c.received.filter((m) => m.name === name &&
        (name === 'created' ? m.args[1].url === url : m.args[0] === url));
}

// A WebSocket DNode session exporting created (id 0) and subscribed (id 1).
// Every text message it receives is kept in c.messages; a close frame or
// the connection ending is recorded in c.closedBy.
async function wsClient(t, d) {
    const c = await WsConn.open(d.port);
    t.after(() => c.close());
    c.messages = [];
    c.closedBy = null;
    let first = true;
    const pump = async () => {
        for (;;) {
            let f;
            try {
                f = await c.nextFrame('a frame');
            } catch (err) {
                c.closedBy = c.closedBy || `connection ended: ${err.message}`;
                return;
            }
            if (f.opcode === OP.CLOSE) {
                const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : '';
                c.closedBy = `close frame ${code}`;
                return;
            }
            if (f.opcode === OP.TEXT) {
                const msg = JSON.parse(f.payload.toString('utf8'));
                if (first) {
                    first = false;
                    c.sendJson({ method: 'methods',
                        arguments: [{ created: '[Function]', subscribed: '[Function]' }],
                        callbacks: { 0: [0, 'created'], 1: [0, 'subscribed'] } });
                }
                c.messages.push(msg);
            }
        }
    };
    pump();
    await waitFor(() => c.messages.some((m) => m.method === 'methods'),
        { timeoutMs: TIMEOUT, what: 'the methods message over WebSocket' });
    c.nextId = 100;
    c.invoke = async (method, ...args) => {
        const id = c.nextId++;
        c.sendJson({ method, arguments: [...args, '[Function]'],
            callbacks: { [id]: [args.length] } });
        const reply = await waitFor(() => c.messages.find((m) => m.method === id),
            { timeoutMs: TIMEOUT, what: `the reply to ${method}` });
        return reply.arguments;
    };
    return c;
}

function wsCreated(c, url) {
    return c.messages.filter((m) => (m.method === 'created' || m.method === 0) &&
        m.arguments[1].url === url).map((m) => m.arguments[0]);
}

// A publisher that publishes {p, i} on url in bursts of `burst` calls,
// each burst once the previous one was answered, until stop(); resolves
// with how many were sent (every one must be answered null).
function keepPublishing(pub, p, url, burst = 1) {
    let stopping = false;
    const state = { acked: 0, sent: 0, errors: [] };
    const done = (async () => {
        while (!stopping && state.errors.length === 0) {
            const calls = [];
            for (let k = 0; k < burst; k++) {
                calls.push(pub.invoke('publish', { p, i: state.sent++ },
                    { url, method: 'create' }));
            }
            for (const [err] of await Promise.all(calls)) {
                if (err !== null) {
                    state.errors.push(err);
                } else {
                    state.acked++;
                }
            }
        }
        return state.sent;
    })();
    state.stop = () => {
        stopping = true;
        return done;
    };
    return state;
}

// Publishers on the old generation (moved by the reload, one call at a
// time) and on the new one (in bursts, while the old one hands over).
const PUBLISHERS = 2;
const BLASTERS = 3;

// Every publisher's messages, once each and in its order, and the same
// overall order for every subscriber.
function checkSequences(seqs, totals) {
    for (const [who, seq] of Object.entries(seqs)) {
        for (let p = 0; p < totals.length; p++) {
            assert.deepStrictEqual(seq.filter((doc) => doc.p === p).map((doc) => doc.i),
                [...Array(totals[p]).keys()],
                `${who}: publisher ${p}'s messages once each, in order`);
        }
    }
    const [first, ...rest] = Object.values(seqs).map((seq) =>
        seq.map((doc) => `${doc.p}:${doc.i}`).join(','));
    for (const other of rest) {
        assert.strictEqual(other, first, 'every subscriber saw one order');
    }
}

// Sessions that only sit subscribed to another channel, reading whatever
// comes. Connected first, they are handed over last: a retiring worker
// takes them after the subscribers under test, which leaves the markers of
// those time to fall among new messages before the old worker reads on.
async function idleSubscribers(t, d, n) {
    const socks = [];
    for (let i = 0; i < n; i++) {
        const sock = net.connect(d.port, '127.0.0.1');
        t.after(() => sock.destroy());
        await new Promise((resolve, reject) => {
            sock.once('connect', resolve);
            sock.once('error', reject);
        });
        sock.resume();
        sock.write('{"method":"methods","arguments":[{}],"callbacks":{}}\n' +
            '{"method":"subscribe","arguments":["/idle"],"callbacks":{}}\n');
        socks.push(sock);
    }
    return socks;
}

const IDLE_SUBSCRIBERS = 100;

async function reloadWhilePublishing(t, d, nworkers, { redis = false } = {}) {
    const url = '/through-reload';
    const old = await d.waitWorkers(nworkers);
    await idleSubscribers(t, d, IDLE_SUBSCRIBERS);
    const tcpSub = await tcpClient(t, d);
    assert.deepStrictEqual(await tcpSub.invoke('subscribe', url), [null]);
    await waitFor(() => tcpCalls(tcpSub, 'subscribed', url).length === 1,
        { timeoutMs: TIMEOUT, what: 'the TCP subscriber\'s own subscribed push' });
    const wsSub = await wsClient(t, d);
    assert.deepStrictEqual(await wsSub.invoke('subscribe', url), [null]);
    await waitFor(() => tcpCalls(tcpSub, 'subscribed', url).length === 2,
        { timeoutMs: TIMEOUT, what: 'the WebSocket subscriber\'s join' });
    const pubs = [];
    for (let p = 0; p < PUBLISHERS; p++) {
        pubs.push(await tcpClient(t, d));
    }
    const loads = pubs.map((pub, p) => keepPublishing(pub, p, url));
    const acked = () => loads.reduce((n, l) => n + l.acked, 0);
    await waitFor(() => acked() >= 100, { timeoutMs: TIMEOUT, what: '100 publishes' });
    // The old generation is held (SIGSTOP) through the commit, so that the
    // new one is publishing at full speed by the time the old one hands
    // its sessions over: the markers then fall among a stream of messages.
    for (const pid of old) {
        process.kill(pid, 'SIGSTOP');
    }
    const since = d.stderr().length;
    try {
        d.signal('SIGHUP');
        await d.waitForLog(/reloaded: generation 2 started/, { since, timeoutMs: TIMEOUT });
        if (redis) {
            await waitFor(() => d.stderr().slice(since).split('\n')
                .filter((l) => /bus: connected to Redis/.test(l)).length === nworkers,
            { timeoutMs: TIMEOUT, what: 'the new workers\' Redis connections' });
        }
        for (let b = 0; b < BLASTERS; b++) {
            const pub = await tcpClient(t, d);
            pubs.push(pub);
            loads.push(keepPublishing(pub, PUBLISHERS + b, url, 10));
        }
        await waitFor(() => loads.slice(PUBLISHERS).every((l) => l.acked >= 50),
            { timeoutMs: TIMEOUT, what: 'publishes on the new generation' });
    } finally {
        for (const pid of old) {
            process.kill(pid, 'SIGCONT');
        }
    }
    await waitFor(() => {
        const now = d.workerPids();
        return now.length === nworkers && now.every((p) => !old.includes(p));
    }, { timeoutMs: TIMEOUT, what: 'the old generation to exit' });
    const atExit = acked();
    await waitFor(() => acked() >= atExit + 100,
        { timeoutMs: TIMEOUT, what: '100 publishes after the old generation left' });
    const totals = await Promise.all(loads.map((l) => l.stop()));
    assert.deepStrictEqual(loads.flatMap((l) => l.errors), []);
    await checkDelivered(pubs[0], tcpSub, wsSub, url, totals);
    assert.ok(!tcpSub.isClosed && pubs.every((pub) => !pub.isClosed),
        'the TCP connections stayed open');
    assert.strictEqual(wsSub.closedBy, null, 'the WebSocket stayed open');
    // The counts moved with the sessions: nobody was told of a leave or a
    // join, and a newcomer is the third subscriber.
    assert.strictEqual(tcpCalls(tcpSub, 'unsubscribed', url).length, 0);
    assert.strictEqual(tcpCalls(tcpSub, 'subscribed', url).length, 2);
    const late = await tcpClient(t, d);
    assert.deepStrictEqual(await late.invoke('subscribe', url), [null]);
    const joined = await waitFor(() => tcpCalls(late, 'subscribed', url)[0],
        { timeoutMs: TIMEOUT, what: 'the newcomer\'s subscribed push' });
    assert.strictEqual(joined.args[1], 3, 'online counts each moved session once');
    await waitFor(() => tcpCalls(tcpSub, 'subscribed', url).length === 3,
        { timeoutMs: TIMEOUT, what: 'the newcomer\'s join at the old subscriber' });
    assert.strictEqual(tcpCalls(tcpSub, 'subscribed', url)[2].args[1], 3);
    assert.match(d.stderr().slice(since), /retiring: handing/);
}

// Publishes an end mark through pub, then checks that the TCP and the
// WebSocket subscriber each got every load's messages once and in order
// (anything duplicated would have arrived before the end mark).
async function checkDelivered(pub, tcpSub, wsSub, url, totals) {
    assert.deepStrictEqual(await pub.invoke('publish', { end: true },
        { url, method: 'create' }), [null]);
    await waitFor(() => tcpCalls(tcpSub, 'created', url).some((m) => m.args[0].end) &&
        wsCreated(wsSub, url).some((doc) => doc.end), { timeoutMs: TIMEOUT, what: 'the end' });
    checkSequences({
        TCP: tcpCalls(tcpSub, 'created', url).map((m) => m.args[0]).filter((doc) => !doc.end),
        WebSocket: wsCreated(wsSub, url).filter((doc) => !doc.end),
    }, totals);
}

// A TCP subscriber of url (its own subscribed push seen) and a publisher.
async function subscriberAndPublisher(t, d, url) {
    const sub = await tcpClient(t, d);
    const pub = await tcpClient(t, d);
    assert.deepStrictEqual(await sub.invoke('subscribe', url), [null]);
    await waitFor(() => tcpCalls(sub, 'subscribed', url).length === 1,
        { timeoutMs: TIMEOUT, what: 'the subscribed push' });
    return { sub, pub };
}

// Publishes on url until sub hears one (a resubscription is asynchronous).
async function publishUntilHeard(pub, sub, url, what) {
    let i = 0;
    await waitFor(async () => {
        const [err] = await pub.invoke('publish', { i: i++ }, { url, method: 'create' });
        return err === null && tcpCalls(sub, 'created', url).length > 0;
    }, { timeoutMs: TIMEOUT, intervalMs: 200, what });
}

// dnoded with `workers` workers on a Redis of its own, once its bus is up.
async function dnodedOnRedis(t, workers) {
    const redis = await startRedis();
    t.after(() => redis.close());
    const d = await startDnoded({ mongodbUri: NO_DB, redisUrl: redis.url, redisReady: true,
        config: { workers } }, t);
    return { redis, d };
}

test('single-host: subscribers over TCP and WebSocket get every message across a reload',
    async (t) => {
        const d = await startDnoded({ mongodbUri: NO_DB, config: { workers: 2 } }, t);
        await reloadWhilePublishing(t, d, 2);
    });

test('Redis mode: subscribers over TCP and WebSocket get every message across a reload',
    { skip: skipRedis }, async (t) => {
        const { d } = await dnodedOnRedis(t, 2);
        await reloadWhilePublishing(t, d, 2, { redis: true });
    });

test('Redis mode: a reload while Redis is down keeps the subscribers, and they hear again',
    { skip: skipRedis }, async (t) => {
        const { redis, d } = await dnodedOnRedis(t, 1);
        const [old] = await d.waitWorkers(1);
        const url = '/redis-down';
        const { sub, pub } = await subscriberAndPublisher(t, d, url);
        await redis.stop();
        await d.waitForLog(/bus: Redis .* unavailable/, { timeoutMs: TIMEOUT });
        d.signal('SIGHUP');
        await d.waitForLog(/reloaded: generation 2 started/, { timeoutMs: TIMEOUT });
        await waitFor(() => !d.workerPids().includes(old),
            { timeoutMs: TIMEOUT, what: 'the old worker to exit' });
        assert.ok(!sub.isClosed && !pub.isClosed, 'both connections stayed open');
        await redis.start();
        await d.waitForLog(/bus: connected to Redis|bus: Redis is back/,
            { since: d.stderr().lastIndexOf('reloaded: generation 2'), timeoutMs: TIMEOUT });
        await publishUntilHeard(pub, sub, url, 'a message after Redis came back');
        assert.ok(!sub.isClosed, 'the subscriber is still connected');
    });

test('a reload that turns Redis on keeps the subscribers, counted on the new carrier',
    { skip: skipRedis }, async (t) => {
        const redis = await startRedis();
        t.after(() => redis.close());
        // A long shutdown_timeout: the move must not wait for it.
        const d = await startDnoded({ mongodbUri: NO_DB,
            config: { workers: 1, shutdown_timeout: 600 } }, t);
        const [old] = await d.waitWorkers(1);
        const url = '/new-carrier';
        const { sub, pub } = await subscriberAndPublisher(t, d, url);
        d.opts.redisUrl = redis.url;
        d.writeConfig();
        const since = d.stderr().length;
        d.signal('SIGHUP');
        await d.waitForLog(/reloaded: generation 2 started/, { since, timeoutMs: TIMEOUT });
        await waitFor(() => !d.workerPids().includes(old),
            { timeoutMs: TIMEOUT, what: 'the old worker to exit' });
        await d.waitForLog(/moved from another carrier/, { since, timeoutMs: TIMEOUT });
        assert.ok(!sub.isClosed && !pub.isClosed, 'both connections stayed open');
        await publishUntilHeard(pub, sub, url, 'a message through Redis');
        const late = await tcpClient(t, d);
        assert.deepStrictEqual(await late.invoke('subscribe', url), [null]);
        const joined = await waitFor(() => tcpCalls(late, 'subscribed', url)[0],
            { timeoutMs: TIMEOUT, what: 'the newcomer\'s subscribed push' });
        assert.strictEqual(joined.args[1], 2, 'the moved subscriber counts on the new carrier');
    });

test('two reloads back to back: sessions move twice, every message still once and in order',
    async (t) => {
        const d = await startDnoded({ mongodbUri: NO_DB, config: { workers: 2 } }, t);
        const first = await d.waitWorkers(2);
        const url = '/twice';
        const sub = await tcpClient(t, d);
        assert.deepStrictEqual(await sub.invoke('subscribe', url), [null]);
        const wsSub = await wsClient(t, d);
        assert.deepStrictEqual(await wsSub.invoke('subscribe', url), [null]);
        const pub = await tcpClient(t, d);
        const load = keepPublishing(pub, 0, url);
        await waitFor(() => load.acked >= 50, { timeoutMs: TIMEOUT, what: '50 publishes' });
        const since = d.stderr().length;
        d.signal('SIGHUP');
        await d.waitForLog(/reloaded: generation 2 started/, { since, timeoutMs: TIMEOUT });
        d.signal('SIGHUP');
        await d.waitForLog(/reloaded: generation 3 started/, { since, timeoutMs: TIMEOUT });
        // Only the third generation is left: the first and second moved
        // their sessions on (the second, perhaps, sessions it had just taken).
        const third = [...d.stderr().slice(since)
            .matchAll(/worker \d+ started \(pid (\d+), generation 3\)/g)].map((m) => Number(m[1]));
        assert.strictEqual(third.length, 2);
        await waitFor(() => {
            const pids = d.workerPids();
            return pids.length === 2 && pids.every((p) => third.includes(p));
        }, { timeoutMs: TIMEOUT, what: 'only the third generation to run' });
        assert.ok(first.every((p) => !third.includes(p)));
        const at = load.acked;
        await waitFor(() => load.acked >= at + 50, { timeoutMs: TIMEOUT, what: 'more publishes' });
        const total = await load.stop();
        assert.deepStrictEqual(load.errors, []);
        await checkDelivered(pub, sub, wsSub, url, [total]);
        assert.ok(!sub.isClosed && !pub.isClosed, 'the TCP connections stayed open');
        assert.strictEqual(wsSub.closedBy, null, 'the WebSocket stayed open');
    });

test('a connection that has not spoken yet is handed over and served', async (t) => {
    const d = await startDnoded({ mongodbUri: NO_DB,
        config: { workers: 1, log_level: 'debug' } }, t);
    const [old] = await d.waitWorkers(1);
    const sock = net.connect(d.port, '127.0.0.1');
    t.after(() => sock.destroy());
    await new Promise((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
    });
    let text = '';
    let ended = false;
    sock.setEncoding('utf8');
    sock.on('data', (s) => {
        text += s;
    });
    sock.on('close', () => {
        ended = true;
    });
    // The old worker accepted it before the reload.
    await d.waitForLog(new RegExp(`:${sock.localPort}:? connected`), { timeoutMs: TIMEOUT });
    d.signal('SIGHUP');
    await d.waitForLog(/reloaded: generation 2 started/, { timeoutMs: TIMEOUT });
    await waitFor(() => !d.workerPids().includes(old),
        { timeoutMs: TIMEOUT, what: 'the old worker to exit' });
    assert.strictEqual(ended, false, 'the connection stayed open');
    sock.write('{"method":"methods","arguments":[{}],"callbacks":{}}\n' +
        '{"method":"subscribe","arguments":["/quiet","[Function]"],"callbacks":{"0":[1]}}\n');
    await waitFor(() => /"method":0,"arguments":\[null\]/.test(text),
        { timeoutMs: TIMEOUT, what: `the subscribe answer (have ${JSON.stringify(text)})` });
    assert.match(text, /^\{"method":"methods"/, 'the new worker greeted it first');
});

test('a WebSocket message in pieces across a reload moves only once it is whole',
    async (t) => {
        const d = await startDnoded({ mongodbUri: NO_DB, config: { workers: 1 } }, t);
        const [old] = await d.waitWorkers(1);
        const c = await wsClient(t, d);
        assert.deepStrictEqual(await c.invoke('subscribe', '/pieces'), [null]);
        // A message in two fragments, the second itself cut in half.
        const text = JSON.stringify({ method: 'subscribe',
            arguments: ['/pieces-2', '[Function]'], callbacks: { 7: [1] } });
        const cut = 20;
        const second = frame(OP.CONT, text.slice(cut));
        c.sock.write(frame(OP.TEXT, text.slice(0, cut), { fin: false }));
        c.sock.write(second.subarray(0, 9));
        d.signal('SIGHUP');
        await d.waitForLog(/reloaded: generation 2 started/, { timeoutMs: TIMEOUT });
        await sleep(300);
        assert.ok(d.workerPids().includes(old),
            'the old worker keeps a session whose message is incomplete');
        c.sock.write(second.subarray(9));
        const reply = await waitFor(() => c.messages.find((m) => m.method === 7),
            { timeoutMs: TIMEOUT, what: 'the reply to the message in pieces' });
        assert.deepStrictEqual(reply.arguments, [null]);
        await waitFor(() => !d.workerPids().includes(old),
            { timeoutMs: TIMEOUT, what: 'the old worker to exit' });
        assert.deepStrictEqual(await c.invoke('subscribe', '/pieces-3'), [null]);
        assert.strictEqual(c.closedBy, null, 'the WebSocket stayed open');
    });

test('a graceful stop (QUIT) still closes sessions; reload is what hands them over',
    async (t) => {
        const d = await startDnoded({ mongodbUri: NO_DB, config: { workers: 1 } }, t);
        const c = await tcpClient(t, d);
        assert.deepStrictEqual(await c.invoke('subscribe', '/bye'), [null]);
        const since = d.stderr().length;
        d.signal('SIGQUIT');
        const exited = d.waitExit(); // the exit may come before the close is seen
        await c.waitClosed(TIMEOUT);
        const exit = await exited;
        assert.strictEqual(exit.code, 0);
        assert.doesNotMatch(d.stderr().slice(since), /handed off|retiring/);
    });
