'use strict';
// Coalesced delivery: when a worker has several messages for one
// subscriber, it writes them together (HACKING.md, "The output path").
// Publishers here write hundreds of publishes in one TCP write, so each
// worker drains many messages per pass and every subscriber's messages go
// out several to a write. What must hold whatever the batching: every
// subscriber of a channel gets each message once, each publisher's in its
// order, and all subscribers of a channel the same order; over TCP with
// the npm dnode client (one message per line), over WebSocket (one DNode
// message per text frame, several frames to a write) and over TLS (several
// lines to a record), across two workers of one host and across two hosts
// on one Redis.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

let dnode = null;
try {
    dnode = require('dnode');
} catch (err) {
    dnode = null; // skipped below: the npm packages are not installed
}

const { startDnoded, sleep, timeScale, DnodeClient } = require('../lib/harness');
const { startRedis } = require('../lib/services');
const { WsConn, OP } = require('../lib/raw_http');
const { findProgram, freePort, waitFor } = require('../lib/proc');
const { makeCA, haveOpenssl } = require('../lib/tls');

const NO_DB = 'mongodb://127.0.0.1:9/coalesce_test';
const PER_PUBLISHER = 400; // per channel; all of a publisher's in one write
const CHANNELS = ['/co-a', '/co-b'];
const TIMEOUT = 60000 * timeScale;

const skip = !dnode ? 'the npm package dnode is not installed (scripts/setup)'
    : haveOpenssl() ? false : 'needs the openssl program (scripts/setup)';
const skipRedis = skip || (process.env.DNODED_TEST_REDIS_URL ||
    findProgram('redis-server', 'DNODED_TEST_REDIS_SERVER') ? false
    : 'needs redis-server (scripts/setup)');

// An npm dnode subscriber of urls: resolves { name, seqs } once each
// subscription is in effect (its own subscribed push arrived); seqs[url]
// collects the documents of created pushes on url.
function npmSubscriber(t, d, urls) {
    return new Promise((resolve, reject) => {
        const seqs = Object.fromEntries(urls.map((u) => [u, []]));
        const joined = new Set();
        const timer = setTimeout(() => reject(new Error('npm dnode subscriber not ready')),
            TIMEOUT);
        const conn = dnode({
            created: (doc, opt) => seqs[opt.url] && seqs[opt.url].push(doc),
            subscribed: (url) => {
                joined.add(url);
                if (urls.every((u) => joined.has(u))) {
                    clearTimeout(timer);
                    resolve({ name: 'tcp (npm dnode)', seqs, error: null });
                }
            },
        }, { weak: false });
        conn.on('error', reject);
        conn.on('remote', (remote) => {
            for (const u of urls) {
                remote.subscribe(u, (err) => err && reject(new Error(`subscribe: ${err}`)));
            }
        });
        conn.connect(d.port, '127.0.0.1');
        t.after(() => {
            conn.end();
            if (conn.stream) {
                conn.stream.destroy();
            }
        });
    });
}

// A WebSocket subscriber of urls, reading every frame as it comes: each
// text frame must be exactly one DNode message.
async function wsSubscriber(t, d, urls) {
    const c = await WsConn.open(d.port);
    t.after(() => c.close());
    const seqs = Object.fromEntries(urls.map((u) => [u, []]));
    const joined = new Set();
    const methods = await c.nextMessage((m) => m.method === 'methods', 'the methods message');
    assert.ok(methods.arguments[0].subscribe);
    c.sendJson({ method: 'methods', arguments: [{ created: '[Function]', subscribed: '[Function]' }],
        callbacks: { 0: [0, 'created'], 1: [0, 'subscribed'] } });
    const sub = { name: 'websocket', seqs, error: null };
    (async () => {
        for (;;) {
            let f;
            try {
                f = await c.nextFrame('pushes');
            } catch (err) {
                if (/timed out/.test(err.message)) {
                    continue; // nothing published yet
                }
                throw err;
            }
            if (f.opcode === OP.CLOSE) {
                return;
            }
            if (f.opcode !== OP.TEXT) {
                continue;
            }
            const m = JSON.parse(f.payload.toString('utf8')); // throws on two messages in one
            // Pushed by name or by the id we exported it under: both are DNode.
            if ((m.method === 'created' || m.method === 0) && seqs[m.arguments[1].url]) {
                seqs[m.arguments[1].url].push(m.arguments[0]);
            } else if (m.method === 'subscribed' || m.method === 1) {
                joined.add(m.arguments[0]);
            }
        }
    })().catch((err) => {
        sub.error = err;
    });
    urls.forEach((u, i) => c.sendJson({ method: 'subscribe', arguments: [u, '[Function]'],
        callbacks: { [100 + i]: [1] } }));
    await waitFor(() => urls.every((u) => joined.has(u)),
        { timeoutMs: TIMEOUT, what: 'the WebSocket subscriptions' });
    return sub;
}

// A subscriber over TLS (the raw DNode client of tests/lib): each push is
// one SSL_write of what the batch holds.
async function tlsSubscriber(t, d, urls) {
    const pushes = {};
    for (const name of ['created', 'subscribed']) {
        pushes[name] = () => {};
    }
    const c = await DnodeClient.connect(d.tlsPort, { methods: pushes,
        tlsOptions: { ca: d.ca.ca, servername: 'localhost' } });
    t.after(() => c.close());
    await c.ready;
    for (const u of urls) {
        assert.deepStrictEqual(await c.invoke('subscribe', u), [null]);
    }
    await waitFor(() => urls.every((u) => c.received.some((m) => m.name === 'subscribed' &&
        m.args[0] === u)), { timeoutMs: TIMEOUT, what: 'the TLS subscriptions' });
    const seqs = {};
    for (const u of urls) {
        Object.defineProperty(seqs, u, { enumerable: true, get: () => c.received
            .filter((m) => m.name === 'created' && m.args[1].url === u).map((m) => m.args[0]) });
    }
    return { name: 'tls', seqs, error: null };
}

// A raw TCP publisher: resolves with a function that writes `count`
// publishes per channel, interleaved across channels, in one write.
async function publisher(t, d, k) {
    const c = await d.connect();
    t.after(() => c.close());
    await c.ready;
    return () => {
        let lines = '';
        for (let i = 0; i < PER_PUBLISHER; i++) {
            for (const url of CHANNELS) {
                lines += JSON.stringify({ method: 'publish',
                    arguments: [{ p: k, i }, { url, method: 'create' }],
                    callbacks: {}, links: [] }) + '\n';
            }
        }
        c.sendRaw(lines);
    };
}

// Everything delivered, once, in each publisher's order, and one order per
// channel for all of its subscribers.
async function check(subs, npubs) {
    const want = npubs * PER_PUBLISHER;
    await waitFor(() => subs.every((s) => s.error ||
        Object.values(s.seqs).every((seq) => seq.length >= want)), {
        timeoutMs: TIMEOUT,
        what: `${want} messages per channel at every subscriber (have ${subs.map((s) =>
            Object.values(s.seqs).map((q) => q.length).join('/')).join(', ')})`,
    });
    await sleep(300); // a duplicate would arrive by now
    for (const url of CHANNELS) {
        let first = null;
        for (const s of subs) {
            assert.strictEqual(s.error, null, `${s.name} read only whole messages`);
            const seq = s.seqs[url];
            if (!seq) {
                continue;
            }
            assert.strictEqual(seq.length, want, `${s.name} got each message on ${url} once`);
            for (let k = 0; k < npubs; k++) {
                assert.deepStrictEqual(seq.filter((m) => m.p === k).map((m) => m.i),
                    [...Array(PER_PUBLISHER).keys()], `${s.name}: publisher ${k} in order on ${url}`);
            }
            const order = seq.map((m) => `${m.p}:${m.i}`).join(',');
            if (first === null) {
                first = order;
            } else {
                assert.strictEqual(order, first, `${s.name} saw ${url} in the one order`);
            }
        }
    }
}

// Subscribers of each kind, one of them on both channels, then the
// publishers all at once.
async function run(t, hosts, makePublishers) {
    const subs = [];
    for (const d of hosts) {
        subs.push(await npmSubscriber(t, d, CHANNELS));
        subs.push(await npmSubscriber(t, d, [CHANNELS[0]]));
        subs.push(await wsSubscriber(t, d, CHANNELS));
        subs.push(await wsSubscriber(t, d, [CHANNELS[1]]));
    }
    const pubs = await makePublishers();
    pubs.forEach((go) => go());
    await check(subs, pubs.length);
}

test('coalesced deliveries across two workers of one host: once, in order, TCP, WebSocket, TLS',
    { skip }, async (t) => {
        const ca = makeCA(fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-ca-')));
        t.after(() => fs.rmSync(ca.dir, { recursive: true, force: true }));
        const cert = ca.issue('server');
        const tlsPort = await freePort();
        const d = await startDnoded({ mongodbUri: NO_DB, config: { workers: 2,
            listen_tls: `127.0.0.1:${tlsPort}`, tls_certificate: cert.cert,
            tls_certificate_key: cert.key } }, t);
        d.tlsPort = tlsPort;
        d.ca = ca;
        const pids = await d.waitWorkers(2);
        const subs = [];
        const pubs = [];
        // Subscribers and a publisher on each worker: the other one is
        // stopped while they connect, so the kernel cannot pick.
        for (const pid of pids) {
            await d.withOnlyWorker(pid, async () => {
                subs.push(await npmSubscriber(t, d, CHANNELS));
                subs.push(await npmSubscriber(t, d, [CHANNELS[0]]));
                subs.push(await wsSubscriber(t, d, CHANNELS));
                subs.push(await wsSubscriber(t, d, [CHANNELS[1]]));
                subs.push(await tlsSubscriber(t, d, CHANNELS));
                pubs.push(await publisher(t, d, pubs.length));
            });
        }
        pubs.forEach((go) => go());
        await check(subs, pubs.length);
    });

test('coalesced deliveries across two hosts on one Redis: once, in order, TCP and WebSocket',
    { skip: skipRedis }, async (t) => {
        const redis = await startRedis();
        const opts = { redisUrl: redis.url, mongodbUri: NO_DB, redisReady: true };
        let a;
        let b;
        try {
            a = await startDnoded(opts, t);
            b = await startDnoded(opts, t);
        } finally {
            t.after(() => redis.close()); // after the servers' own close
        }
        await run(t, [a, b], async () => [await publisher(t, a, 0), await publisher(t, b, 1)]);
    });
