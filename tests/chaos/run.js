'use strict';
// chaos: faults under load. Starts its own Redis and FerretDB (it stops and
// starts them, so never the DNODED_TEST_* servers) and dnoded with two
// workers in Redis mode; keeps CLIENTS clients creating and updating todos
// and subscribed to their channel (and a few WebSocket sessions only
// subscribed) while it kills a worker with SIGKILL,
// restarts Redis, stops and restarts FerretDB and reloads dnoded (SIGHUP).
// Clients reconnect and resubscribe whenever their connection drops.
//
// Afterwards it asserts what README.md ("The wire API") promises:
//  - every write acknowledged to a client (fn(doc) called) is in the
//    database with at least that content (read back over the wire);
//  - every subscriber received every change made while it and Redis were
//    connected (the windows are defined at expectedBy below), and no change
//    twice or out of order;
//  - every worker is healthy: two workers run, /healthz answers, fresh
//    clients can subscribe, create and see the change pushed.
// Prints a summary. Every phase is bounded; the run takes about a minute.
// Run: node --test tests/chaos/run.js (make check does, with DNODED_BIN).

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const crypto = require('node:crypto');

const { startDnoded, DnodeClient } = require('../lib/harness');
const { startRedis, startFerretDB } = require('../lib/services');
const { MongoConnection, withDatabase } = require('../lib/mongo');
const { findProgram, sleep, waitFor, timeScale } = require('../lib/proc');
const { httpGet, WsConn, OP } = require('../lib/raw_http');

const CLIENTS = 20;
const WS_SUBSCRIBERS = 4; // WebSocket sessions that only subscribe
const URL = '/chaos';
const UPDATES_PER_DOC = 4;
// Slack around every window: a change acknowledged at t reaches the
// subscribers' sockets well within this (loopback, even under ASan).
const MARGIN_MS = 2500 * timeScale;
const OP_TIMEOUT_MS = 15000 * timeScale;
const PHASE_MS = 4000;

const skip = findProgram('ferretdb', 'DNODED_TEST_FERRETDB') &&
    findProgram('redis-server', 'DNODED_TEST_REDIS_SERVER')
    ? false : 'needs ferretdb and redis-server (scripts/setup)';

const now = () => Date.now();

// Pids whose parent is pid (from /proc).
function childrenOf(pid) {
    const out = [];
    for (const name of fs.readdirSync('/proc')) {
        if (!/^\d+$/.test(name)) {
            continue;
        }
        try {
            const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
            // pid (comm) state ppid ...; comm may hold spaces and parens
            const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
            if (ppid === pid) {
                out.push(Number(name));
            }
        } catch (err) {
            // gone meanwhile
        }
    }
    return out.sort((a, b) => a - b);
}

// Log lines of dnoded as { at: ms, text }.
function logLines(d, since = 0) {
    return d.stderr().slice(since).split('\n').map((text) => {
        const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) /.exec(text);
        return m ? { at: Date.parse(m[1]), text } : null;
    }).filter(Boolean);
}

// ------------------------------------------------------------------ load

// A callback for c: { fn, args }, args resolving with fn's arguments and
// rejecting after ms or when c closes. (Unlike DnodeClient.callback, its
// timer goes with the connection, so no timer outlives the run.)
function answer(c, ms, what) {
    let fn;
    const args = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
        fn = (...a) => {
            clearTimeout(timer);
            resolve(a);
        };
        c.closed.then(() => {
            clearTimeout(timer);
            reject(new Error(`connection closed before ${what}`));
        });
    });
    args.catch(() => {});
    return { fn, args };
}

class Load {
    constructor(port) {
        this.port = port;
        this.stopping = false;
        this.conns = []; // every connection: { id, client, openAt, subAt, closedAt, byUs, received }
        this.writes = []; // acknowledged: { key, id, title, order, sentAt, ackAt, conn }
        this.failed = 0; // writes answered with an error
        this.unanswered = 0; // writes whose connection dropped or that timed out
        this.live = new Set(); // open DnodeClients
        this.tasks = []; // the writing clients
        this.readers = []; // the WebSocket subscribers, until close()
        this.nextConn = 0;
    }

    start() {
        for (let i = 0; i < CLIENTS; i++) {
            this.tasks.push(this.client(i));
        }
        for (let i = 0; i < WS_SUBSCRIBERS; i++) {
            this.readers.push(this.wsSubscriber(CLIENTS + i));
        }
    }

    // Stop writing; connections stay open (still receiving) until close().
    async stop() {
        this.stopping = true;
        await Promise.all(this.tasks);
    }

    async close() {
        this.stopping = true;
        for (const c of this.live) {
            c.conn.byUs = true;
            c.conn.closedAt = c.conn.closedAt || now();
            c.close();
        }
        this.live.clear();
        await Promise.all(this.readers);
    }

    async client(idx) {
        let doc = null; // { id, title, order } of the doc this client updates
        let n = 0;
        while (!this.stopping) {
            const { conn, push } = this.track(idx, false);
            // Distinct functions: the client gives one function one id.
            const methods = {
                created: (doc) => push(doc),
                updated: (doc) => push(doc),
                subscribed: () => push(null),
                unsubscribed: () => push(null),
                error() {},
            };
            let c;
            try {
                c = await DnodeClient.connect(this.port, { methods, timeoutMs: OP_TIMEOUT_MS });
            } catch (err) {
                await sleep(100);
                continue;
            }
            this.conns.push(conn);
            c.conn = conn;
            this.live.add(c);
            c.closed.then(() => {
                conn.closedAt = conn.closedAt || now();
                this.live.delete(c);
            });
            try {
                await c.ready;
                const sub = answer(c, OP_TIMEOUT_MS, 'the reply to subscribe');
                c.call('subscribe', URL, sub.fn);
                const [err] = await sub.args;
                assert.strictEqual(err, null);
                while (!this.stopping && !c.isClosed) {
                    if (doc === null || doc.order >= UPDATES_PER_DOC) {
                        const title = `c${idx}-${n++}`;
                        const ack = await this.write(c, conn, 'create', { title, order: 0 });
                        if (ack) {
                            doc = { id: ack._id, title, order: 0 };
                        }
                    } else {
                        // An update that was not acknowledged may still have
                        // been made: never repeat it (the same change twice
                        // would look like a duplicate push); take a new doc.
                        const order = doc.order + 1;
                        const current = doc;
                        doc = null;
                        const ack = await this.write(c, conn, 'update',
                            { _id: current.id, title: current.title, order });
                        if (ack) {
                            current.order = order;
                            doc = current;
                        }
                    }
                }
            } catch (err) {
                // dropped (kill, reload, a timeout): reconnect below
            }
            if (!c.isClosed && !this.stopping) {
                conn.byUs = true;
                conn.closedAt = now();
                c.close();
            }
            if (!this.stopping) {
                await sleep(50 + Math.floor(Math.random() * 150));
            }
        }
    }

    // A connection record, and the push handler that fills it in.
    track(idx, ws) {
        const conn = { id: this.nextConn++, client: idx, ws, openAt: now(), subAt: null,
            closedAt: null, byUs: false, received: new Set(), last: new Map(), disorder: [] };
        const push = (d) => {
            if (conn.subAt === null) {
                conn.subAt = now();
            }
            if (d && typeof d._id === 'string') {
                const key = `${d._id}:${d.order}`;
                // One doc's changes arrive once each, in the order made.
                if (conn.received.has(key) || conn.last.get(d._id) >= d.order) {
                    conn.disorder.push(`${key} after ${d._id}:${conn.last.get(d._id)}`);
                }
                conn.received.add(key);
                conn.last.set(d._id, d.order);
            }
        };
        return { conn, push };
    }

    // A WebSocket session that subscribes and reads pushes until dropped,
    // then reconnects (until stopped; close() ends the last one).
    async wsSubscriber(idx) {
        while (!this.stopping) {
            let c;
            try {
                c = await WsConn.open(this.port);
            } catch (err) {
                await sleep(100);
                continue;
            }
            const { conn, push } = this.track(idx, true);
            this.conns.push(conn);
            c.conn = conn;
            this.live.add(c);
            c.reader.closed.then(() => {
                conn.closedAt = conn.closedAt || now();
                this.live.delete(c);
            });
            try {
                await c.nextMessage((m) => m.method === 'methods', 'the methods message');
                c.sendJson({ method: 'methods', arguments: [{ created: '[Function]',
                    updated: '[Function]', subscribed: '[Function]', unsubscribed: '[Function]' }],
                callbacks: { 0: [0, 'created'], 1: [0, 'updated'], 2: [0, 'subscribed'],
                    3: [0, 'unsubscribed'] } });
                c.sendJson({ method: 'subscribe', arguments: [URL, '[Function]'],
                    callbacks: { 10: [1] } });
                for (;;) {
                    let f;
                    try {
                        f = await c.nextFrame('a push');
                    } catch (err) {
                        if (c.reader.ended) {
                            break;
                        }
                        continue; // idle for a while: keep waiting
                    }
                    if (f.opcode === OP.CLOSE) {
                        break;
                    }
                    if (f.opcode !== OP.TEXT) {
                        continue;
                    }
                    const m = JSON.parse(f.payload.toString('utf8'));
                    // Pushes name the method the session exported.
                    if (m.method === 'created' || m.method === 'updated') {
                        push(m.arguments[0]);
                    } else if (m.method === 'subscribed' || m.method === 'unsubscribed') {
                        push(null);
                    } else if (m.method === 10) {
                        assert.strictEqual(m.arguments[0], null);
                    }
                }
            } catch (err) {
                // dropped before it subscribed: reconnect below
            }
            if (!c.reader.ended) {
                conn.byUs = true;
                conn.closedAt = conn.closedAt || now();
                c.close();
            }
            if (!this.stopping) {
                await sleep(50 + Math.floor(Math.random() * 150));
            }
        }
    }

    // One create/update; resolves with the acknowledged doc, or null.
    async write(c, conn, method, data) {
        const reply = answer(c, OP_TIMEOUT_MS, `the reply to ${method}`);
        let failed = null;
        const opt = { type: 'todo', url: URL, error: (e) => {
            failed = e;
            reply.fn(null);
        } };
        const sentAt = now();
        c.call(method, data, opt, reply.fn);
        let args;
        try {
            args = await reply.args;
        } catch (err) {
            this.unanswered++;
            throw err; // the connection is closed or stuck: reconnect
        }
        const ackAt = now();
        const doc = args[0];
        if (failed || !doc || typeof doc._id !== 'string') {
            this.failed++;
            await sleep(100); // the database may be down: do not spin
            return null;
        }
        assert.strictEqual(doc.title, data.title);
        assert.strictEqual(doc.order, data.order);
        this.writes.push({ key: `${doc._id}:${doc.order}`, id: doc._id, title: doc.title,
            order: doc.order, sentAt, ackAt, conn });
        return doc;
    }
}

// ------------------------------------------------------------------ the run

test('chaos: kill -9 a worker, restart Redis, stop FerretDB, reload, under load',
    { skip, timeout: 240000 * timeScale }, async (t) => {
        // Private servers (this test stops them), stopped after dnoded, so
        // that FerretDB does not wait for dnoded's connections to go.
        let redis = null;
        let mongo = null;
        let d = null;
        const fresh = [];
        t.after(async () => {
            try {
                fresh.forEach((c) => c.close());
                if (d) {
                    await d.close(); // fails the test on a crash, leak or leftover
                }
            } finally {
                await Promise.all([redis && redis.close(), mongo && mongo.close()]);
            }
        });
        redis = await startRedis();
        mongo = await startFerretDB();
        const db = `chaos_${crypto.randomBytes(4).toString('hex')}`;
        d = await startDnoded({
            mongodbUri: withDatabase(mongo.uri, db),
            redisUrl: redis.url,
            config: { workers: 2, db_timeout_ms: 3000, redis_prefix: `chaos${process.pid}:` },
        });
        const master = d.pid;
        const faults = [];
        const outages = []; // [from, to] when Redis was not serving every worker
        await waitFor(() => childrenOf(master).length === 2 &&
            logLines(d).filter((l) => /connected to Redis/.test(l.text)).length >= 2,
        { timeoutMs: 20000 * timeScale, what: 'two workers connected to Redis' });

        const load = new Load(d.port);
        const loadStart = now();
        load.start();
        try {
            await sleep(PHASE_MS);

            // 1. SIGKILL a worker, the one holding the most descriptors (the
            // kernel may have handed it most clients); the master respawns it.
            const fds = (pid) => {
                try {
                    return fs.readdirSync(`/proc/${pid}/fd`).length;
                } catch (err) {
                    return 0;
                }
            };
            const victim = childrenOf(master).sort((a, b) => fds(b) - fds(a))[0];
            process.kill(victim, 'SIGKILL');
            faults.push({ what: `SIGKILL worker ${victim}`, at: now() });
            await waitFor(() => {
                const kids = childrenOf(master);
                return kids.length === 2 && !kids.includes(victim);
            }, { timeoutMs: 15000 * timeScale, what: 'the killed worker to be respawned' });
            await sleep(PHASE_MS);

            // 2. Restart Redis; every worker reconnects and resubscribes.
            let since = d.stderr().length;
            const redisDown = now();
            await redis.stop();
            faults.push({ what: 'Redis stopped', at: redisDown });
            await sleep(1500);
            await redis.start();
            faults.push({ what: 'Redis started', at: now() });
            await waitFor(() => logLines(d, since).filter((l) => /Redis is back/.test(l.text))
                .length >= 2, { timeoutMs: 20000 * timeScale, what: 'both workers back on Redis' });
            outages.push([redisDown, now()]);
            await sleep(PHASE_MS);

            // 3. Stop and restart FerretDB (same data).
            await mongo.stop({ timeoutMs: 5000 });
            faults.push({ what: 'FerretDB stopped', at: now() });
            await sleep(2000);
            await mongo.start();
            faults.push({ what: 'FerretDB started', at: now() });
            await sleep(PHASE_MS);

            // 4. Reload: a new generation takes over, the old one drains.
            since = d.stderr().length;
            const old = childrenOf(master);
            d.signal('SIGHUP');
            faults.push({ what: 'SIGHUP (reload)', at: now() });
            await d.waitForLog(/reloaded: generation 2 started/, { since,
                timeoutMs: 30000 * timeScale });
            await waitFor(() => {
                const kids = childrenOf(master);
                return kids.length === 2 && kids.every((k) => !old.includes(k));
            }, { timeoutMs: 30000 * timeScale, what: 'the old generation to exit' });
            await sleep(PHASE_MS);
        } finally {
            await load.stop();
        }
        const loadEnd = now();
        // Let the last pushes arrive, then close every client ourselves.
        await sleep(MARGIN_MS + 1000);
        await load.close();

        // Outages nobody caused on purpose (e.g. a liveness probe that timed
        // out under load) count too: from the log, down to the next recovery.
        const lines = logLines(d);
        for (const [i, l] of lines.entries()) {
            if (/bus: Redis at .* unavailable/.test(l.text) &&
                !outages.some(([a, b]) => l.at >= a - 1000 && l.at <= b + 1000)) {
                const back = lines.slice(i).find((x) => /Redis is back/.test(x.text));
                outages.push([l.at, back ? back.at : l.at + 15000]);
            }
        }

        // ---- 1. every acknowledged write is in the database
        const conn = await MongoConnection.connect(withDatabase(mongo.uri, db),
            { timeoutMs: 20000 });
        let docs;
        try {
            docs = await conn.find('todos', {});
        } finally {
            conn.close();
        }
        const stored = new Map(docs.map((x) => [String(x._id), x]));
        const missing = [];
        for (const w of load.writes) {
            const s = stored.get(w.id);
            if (!s || s.title !== w.title || !(s.order >= w.order)) {
                missing.push({ write: w.key, stored: s ? { title: s.title, order: s.order } : null });
            }
        }

        // ---- 2. every subscriber got every change made while it and Redis were up
        // A write W (sent at W.sentAt, acknowledged at W.ackAt) is expected by
        // the subscriber connection S when:
        //  - S was subscribed before W was sent: S.subAt, the first push S
        //    received (its own `subscribed` at the latest), which proves its
        //    worker held the channel in Redis, is before W.sentAt;
        //  - S stayed connected from then until W.ackAt + MARGIN_MS;
        //  - Redis served every worker from W.sentAt - MARGIN_MS to
        //    W.ackAt + MARGIN_MS (a publish still in a worker's buffer when
        //    Redis went away is lost, by the documented at-most-once rule);
        //  - W's own connection did not drop within MARGIN_MS of the ack
        //    without us closing it: its worker may have died (kill -9) or been
        //    draining with the PUBLISH still unsent.
        const quiet = (a, b) => outages.every(([x, y]) => b < x || a > y);
        const expectedBy = (w, s) => s.subAt !== null && s.subAt < w.sentAt &&
            s.closedAt !== null && s.closedAt > w.ackAt + MARGIN_MS &&
            quiet(w.sentAt - MARGIN_MS, w.ackAt + MARGIN_MS) &&
            (w.conn.byUs || w.conn.closedAt > w.ackAt + MARGIN_MS);
        let expected = 0;
        let expectedWs = 0;
        let received = 0;
        const lost = [];
        for (const w of load.writes) {
            for (const s of load.conns) {
                if (!expectedBy(w, s)) {
                    continue;
                }
                expected++;
                expectedWs += s.ws ? 1 : 0;
                if (s.received.has(w.key)) {
                    received++;
                } else if (lost.length < 20) {
                    lost.push({ write: w.key, sentAt: w.sentAt - loadStart,
                        ackAt: w.ackAt - loadStart, conn: s.id, client: s.client,
                        subAt: s.subAt - loadStart, closedAt: s.closedAt - loadStart });
                }
            }
        }
        let pushes = 0;
        const disorder = [];
        for (const s of load.conns) {
            pushes += s.received.size;
            disorder.push(...s.disorder.map((x) => `connection ${s.id}: ${x}`));
        }

        // ---- 3. every worker is healthy
        const kids = childrenOf(master);
        for (let i = 0; i < 6; i++) {
            const res = await httpGet(d.port, '/healthz');
            assert.strictEqual(res.status, 200, `/healthz answered ${res.status}`);
        }
        for (let i = 0; i < 4; i++) {
            const c = await d.connect({ methods: { created() {}, subscribed() {} } });
            fresh.push(c);
            assert.deepStrictEqual(await c.invoke('subscribe', '/after-chaos'), [null]);
            await c.nextCall('subscribed');
        }
        const [made] = await fresh[0].invoke('create', { title: 'after' },
            { type: 'todo', url: '/after-chaos' });
        assert.strictEqual(made.title, 'after');
        for (const c of fresh) {
            const [doc] = await c.nextCall('created');
            assert.strictEqual(doc._id, made._id);
        }

        const dropped = load.conns.filter((s) => !s.byUs).length;
        const summary = [
            `load ${((loadEnd - loadStart) / 1000).toFixed(1)} s, ${CLIENTS} clients and ` +
                `${WS_SUBSCRIBERS} WebSocket subscribers, ${load.conns.length} connections ` +
                `(${load.conns.filter((s) => s.ws).length} WebSocket; ${dropped} dropped by ` +
                'the server)',
            `writes acknowledged ${load.writes.length}, refused ${load.failed}, ` +
                `unanswered ${load.unanswered}; documents stored ${docs.length}`,
            `pushes expected ${expected} (${expectedWs} over WebSocket), received ${received} ` +
                'of them ' +
                `(${pushes} pushes received in all)`,
            `faults: ${faults.map((f) => `${f.what} at ${((f.at - loadStart) / 1000).toFixed(1)} s`)
                .join('; ')}`,
            `Redis outages seen: ${outages.map(([a, b]) => `${((a - loadStart) / 1000).toFixed(1)}` +
                `-${((b - loadStart) / 1000).toFixed(1)} s`).join(', ')}`,
        ];
        for (const line of summary) {
            t.diagnostic(line);
        }
        if (process.env.CHAOS_DUMP) {
            fs.writeFileSync(process.env.CHAOS_DUMP, JSON.stringify({ loadStart, outages, faults,
                writes: load.writes.map((w) => ({ ...w, conn: w.conn.id })),
                conns: load.conns.map((s) => ({ ...s, received: [...s.received], last: undefined,
                })) }));
        }
        assert.deepStrictEqual(missing.slice(0, 20), [], `${missing.length} acknowledged writes ` +
            'are not in the database');
        assert.deepStrictEqual(lost, [], `${expected - received} expected pushes did not arrive`);
        assert.deepStrictEqual(disorder.slice(0, 20), [], 'pushes duplicated or out of order');
        assert.strictEqual(kids.length, 2, `workers running: ${kids}`);
        // The run must have tested something.
        assert.ok(load.writes.length >= 100, `only ${load.writes.length} writes acknowledged`);
        assert.ok(expected >= 500, `only ${expected} pushes expected`);
        assert.ok(expectedWs >= 50, `only ${expectedWs} pushes expected over WebSocket`);
        assert.ok(dropped >= 1, 'no connection was dropped by a fault');
    });
