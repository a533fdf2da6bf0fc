'use strict';
// The per-worker and per-session limits of dnoded.conf(5) on the real
// daemon: max_connections (a connection past it is closed at once, logged
// and counted), max_callbacks (held by requests in flight, refused past
// it, released when they complete; not capped at the codec's default),
// max_subscriptions, max_json_depth over TCP and WebSocket, and the
// slow-consumer rule: output over output_soft_limit for output_soft_seconds
// (TCP, and WebSocket with 1008) or over max_output_buffer disconnects the
// session, logged and counted by reason in /metrics. Every wait is bounded;
// nothing asserts how fast.

const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');

const { startDnoded } = require('../lib/harness');
const { getServices } = require('../lib/services');
const { findProgram, waitFor } = require('../lib/proc');
const { WsConn, httpGet } = require('../lib/raw_http');

const skipDb = process.env.DNODED_TEST_MONGODB_URI || findProgram('ferretdb', 'DNODED_TEST_FERRETDB')
    ? false : 'needs ferretdb (scripts/setup) or DNODED_TEST_MONGODB_URI';

// A TCP DNode client exporting the pushes and error (recorded in .errors).
async function client(d, t) {
    const errors = [];
    const c = await d.pushClient(t, { methods: { error: (e) => errors.push(e) } });
    c.errors = errors;
    return c;
}

// /metrics as { 'name{labels}': number }.
async function metrics(d) {
    const res = await httpGet(d.port, '/metrics');
    assert.strictEqual(res.status, 200);
    const out = {};
    for (const line of res.text.split('\n')) {
        const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
        if (m) {
            out[m[1]] = Number(m[2]);
        }
    }
    return out;
}

// A WebSocket DNode session exporting error (id 0) and updated (id 1).
async function wsSession(port) {
    const c = await WsConn.open(port);
    await c.nextMessage((m) => m.method === 'methods', 'the methods message');
    c.sendJson({ method: 'methods', arguments: [{ error: '[Function]', updated: '[Function]' }],
        callbacks: { 0: [0, 'error'], 1: [0, 'updated'] } });
    c.nextId = 100;
    return c;
}

async function wsInvoke(c, method, ...args) {
    const id = c.nextId++;
    c.sendJson({ method, arguments: [...args, '[Function]'], callbacks: { [id]: [args.length] } });
    return (await c.nextMessage((m) => m.method === id, `the reply to ${method}`)).arguments;
}

// [[[...[0]...]]] nested depth arrays deep.
function nested(depth) {
    return '['.repeat(depth) + '0' + ']'.repeat(depth);
}

test('max_connections: a connection past it is closed at once, logged and counted', async (t) => {
    const d = await startDnoded({ config: { max_connections: 3 } }, t);
    const held = [];
    for (let i = 0; i < 3; i++) {
        held.push(await client(d, t));
    }
    const since = d.stderr().length;
    // The kernel completes the handshake (backlog); the worker accepts and
    // closes it without a word: no methods message, just the end.
    const refused = await new Promise((resolve, reject) => {
        const sock = net.connect(d.port, '127.0.0.1');
        const chunks = [];
        const timer = setTimeout(() => reject(new Error('refused connection stayed open')),
            10000);
        sock.on('data', (b) => chunks.push(b));
        sock.on('error', () => {}); // a reset is a close too
        sock.on('close', () => {
            clearTimeout(timer);
            resolve(Buffer.concat(chunks).toString());
        });
    });
    assert.strictEqual(refused, '');
    await d.waitForLog(/refused: max_connections reached/, { since });
    // Those held still work.
    for (const c of held) {
        assert.deepStrictEqual(await c.invoke('subscribe', '/held'), [null]);
    }
    // Room again once one leaves; /metrics (itself a connection) counts it.
    held[0].close();
    const m = await waitFor(async () => {
        try {
            return await metrics(d);
        } catch (err) {
            return null; // still full: refused
        }
    }, { timeoutMs: 10000, what: '/metrics once a connection was freed' });
    assert.ok(m.dnoded_connections_refused_total >= 1, JSON.stringify(m));
});

// The server side of the connection from local port clientPort to port, as
// /proc/net/tcp shows it: { timer, seconds } of its pending TCP timer
// (1 retransmission, 2 keepalive, 0 none).
function serverTimer(port, clientPort) {
    const hex = (p) => `0100007F:${p.toString(16).toUpperCase().padStart(4, '0')}`;
    const hz = Number(require('node:child_process')
        .spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;
    for (const line of require('node:fs').readFileSync('/proc/net/tcp', 'utf8').split('\n')) {
        const f = line.trim().split(/\s+/);
        if (f[1] === hex(port) && f[2] === hex(clientPort) && f[3] === '01') {
            const [timer, when] = f[5].split(':');
            return { timer: Number.parseInt(timer, 16), seconds: Number.parseInt(when, 16) / hz };
        }
    }
    return null;
}

test('tcp_keepalive: idle client connections are probed, so a vanished peer is dropped',
    async (t) => {
        for (const [keepalive, timer] of [[5, 2], [0, 0]]) {
            const d = await startDnoded({ config: { tcp_keepalive: keepalive } }, t);
            const c = await client(d, t);
            assert.deepStrictEqual(await c.invoke('subscribe', '/idle'), [null]);
            // Once the reply is acknowledged (timer 1, retransmission, is gone).
            const found = await waitFor(() => {
                const now = serverTimer(d.port, c.sock.localPort);
                return now && now.timer !== 1 ? now : null;
            }, { timeoutMs: 5000, what: 'the server side of the connection, idle' });
            assert.strictEqual(found.timer, timer,
                `tcp_keepalive = ${keepalive}: timer ${JSON.stringify(found)}`);
            if (keepalive > 0) {
                assert.ok(found.seconds <= keepalive, JSON.stringify(found));
            }
        }
    });

test('max_subscriptions: a session past it is refused until it leaves one', async (t) => {
    const d = await startDnoded({ config: { max_subscriptions: 2 } }, t);
    const c = await client(d, t);
    assert.deepStrictEqual(await c.invoke('subscribe', '/a'), [null]);
    assert.deepStrictEqual(await c.invoke('subscribe', '/b'), [null]);
    const [err] = await c.invoke('subscribe', '/c');
    assert.match(err, /too many subscriptions \(max_subscriptions is 2\)/);
    // Another session has its own allowance.
    const other = await client(d, t);
    assert.deepStrictEqual(await other.invoke('subscribe', '/c'), [null]);
    assert.deepStrictEqual(await c.invoke('unsubscribe', '/a'), [null]);
    assert.deepStrictEqual(await c.invoke('subscribe', '/c'), [null]);
    // It really is subscribed: it receives what is published there.
    assert.deepStrictEqual(await other.invoke('publish', { n: 1 }, { url: '/c', method: 'update' }),
        [null]);
    assert.deepStrictEqual((await c.nextCall('updated'))[0], { n: 1 });
});

test('max_json_depth over TCP: deeper messages are refused, the session carries on',
    async (t) => {
        const d = await startDnoded({ config: { max_json_depth: 8 } }, t);
        const c = await client(d, t);
        // the message (1), arguments (1), the model (1) and 4 arrays: 7, fits
        const ok = await c.invoke('publish', { a: JSON.parse(nested(4)) },
            { url: '/deep', method: 'update' });
        assert.deepStrictEqual(ok, [null]);
        c.send(`{"method":"subscribe","arguments":[${nested(12)}],"callbacks":{}}`);
        const errMsg = await c.nextCall('error');
        assert.strictEqual(errMsg[0].name, 'InvalidRequest');
        assert.match(errMsg[0].message, /malformed JSON/);
        assert.deepStrictEqual(await c.invoke('subscribe', '/after'), [null]);
    });

test('max_json_depth over WebSocket: deeper messages are refused, the session carries on',
    async (t) => {
        const d = await startDnoded({ config: { max_json_depth: 8 } }, t);
        const c = await wsSession(d.port);
        t.after(() => c.close());
        c.sendText(`{"method":"subscribe","arguments":[${nested(12)}],"callbacks":{}}`);
        const msg = await c.nextMessage((m) => m.method === 0, 'the error push');
        assert.strictEqual(msg.arguments[0].name, 'InvalidRequest');
        assert.match(msg.arguments[0].message, /malformed JSON/);
        assert.deepStrictEqual(await wsInvoke(c, 'subscribe', '/after'), [null]);
    });

test('max_callbacks: counted over requests in flight, refused past it, released after',
    { skip: skipDb }, async (t) => {
        const services = await getServices({ redis: false });
        t.after(() => services.close());
        const d = await startDnoded({ services, config: { max_callbacks: 4 } }, t);
        const c = await client(d, t);
        // Three creates with a reply and an opt.error callback each, in one
        // write: the worker reads them in one pass, before any database
        // completion can run, so the first two hold all four callbacks.
        const replies = [];
        const errs = [];
        const lines = [];
        for (let i = 0; i < 3; i++) {
            const fn = c.callback(10000, `reply ${i}`);
            const onErr = c.callback(10000, `error ${i}`);
            replies.push(fn.args);
            errs.push(onErr.args);
            lines.push(JSON.stringify(c.request(c.remoteMethods.create,
                [{ title: `t${i}` }, { type: 'todo', error: onErr.fn }, fn.fn])));
        }
        const since = d.stderr().length;
        c.sendRaw(lines.join('\n') + '\n');
        const [first] = await replies[0];
        const [second] = await replies[1];
        assert.strictEqual(first.title, 't0');
        assert.strictEqual(second.title, 't1');
        // The third was refused before it ran: its callbacks never answer,
        // the client's error method says why.
        const refusal = await waitFor(() => c.errors.find((e) => /too many callbacks/.test(
            e.message)), { timeoutMs: 10000, what: 'the refusal' });
        assert.strictEqual(refusal.name, 'InvalidRequest');
        await d.waitForLog(/max_callbacks is 4, 4 held by requests in flight/, { since });
        // Completed requests release theirs: the same request now goes through.
        const [again] = await c.invoke('create', { title: 't2' }, { type: 'todo', error() {} });
        assert.strictEqual(again.title, 't2');
        // One message with more than max_callbacks is refused whole.
        const five = {};
        for (let i = 0; i < 5; i++) {
            five[`f${i}`] = () => {};
        }
        const before = c.errors.length;
        c.call('publish', { x: 1 }, { url: '/x', method: 'update', ...five });
        await waitFor(() => c.errors.length > before, { timeoutMs: 10000, what: 'a refusal' });
        assert.match(c.errors[before].message, /too many callbacks \(5, at most 4\)/);
    });

test('max_callbacks above the codec default (1024) is honoured', async (t) => {
    const d = await startDnoded({ config: { max_callbacks: 3000 } }, t);
    const c = await client(d, t);
    const many = {};
    for (let i = 0; i < 2000; i++) {
        many[`f${i}`] = () => {};
    }
    // subscribe(url, fn, extra): the extra object's callbacks are parsed and dropped.
    const fn = c.callback(10000, 'the subscribe reply');
    c.call('subscribe', '/many', fn.fn, many);
    assert.deepStrictEqual(await fn.args, [null]);
    assert.deepStrictEqual(c.errors, []);
});

// Publishes big updates on url from pub until the log says the slow
// session was dropped (or count runs out), without waiting on the slow one.
async function flood(d, pub, url, since, re) {
    const pad = 'x'.repeat(200 * 1024);
    for (let i = 0; i < 200; i++) {
        assert.deepStrictEqual(await pub.invoke('publish', { i, pad }, { url, method: 'update' }),
            [null]);
        if (re.test(d.stderr().slice(since))) {
            return;
        }
    }
}

// slow stops reading (the kernel's buffers fill, then the server's output)
// while pub floods url, until the server logs re; the log line is awaited
// apart from the flood, since once nothing more is sent the periodic check
// must still act. Then slow reads again.
async function starve(d, pub, slow, url, re) {
    slow.sock.pause();
    const since = d.stderr().length;
    await flood(d, pub, url, since, re);
    await d.waitForLog(re, { since, timeoutMs: 20000 });
    slow.sock.resume();
}

test('slow consumer over TCP: output over output_soft_limit for output_soft_seconds',
    async (t) => {
        // The hard limit is far away: only the soft rule can act.
        const d = await startDnoded({ config: { output_soft_limit: '64k', output_soft_seconds: 2,
            max_output_buffer: '1g', max_message_size: '1m' } }, t);
        const slow = await client(d, t);
        const fast = await client(d, t);
        const pub = await client(d, t);
        assert.deepStrictEqual(await slow.invoke('subscribe', '/soft'), [null]);
        assert.deepStrictEqual(await fast.invoke('subscribe', '/soft'), [null]);
        let got = 0;
        fast.localMethods.updated = () => got++;
        await starve(d, pub, slow, '/soft',
            /output over output_soft_limit for 2 s \(client too slow\)/);
        await slow.waitClosed(20000);
        const m = await metrics(d);
        assert.strictEqual(m['dnoded_disconnects_total{reason="slow_consumer_soft"}'], 1);
        assert.strictEqual(m['dnoded_disconnects_total{reason="slow_consumer"}'], 0);
        assert.ok(m.dnoded_slow_consumers_total >= 1);
        // The reader kept up and was left alone.
        assert.strictEqual(fast.isClosed, false);
        assert.ok(got > 0);
        assert.deepStrictEqual(await fast.invoke('subscribe', '/still'), [null]);
    });

test('slow consumer over WebSocket: the soft rule closes with 1008', async (t) => {
    const d = await startDnoded({ config: { output_soft_limit: '64k', output_soft_seconds: 1,
        max_output_buffer: '1g', max_message_size: '1m' } }, t);
    const slow = await wsSession(d.port);
    t.after(() => slow.close());
    const pub = await client(d, t);
    assert.deepStrictEqual(await wsInvoke(slow, 'subscribe', '/wsoft'), [null]);
    // Then reading again: what was buffered, then the close frame.
    await starve(d, pub, slow, '/wsoft',
        /output over output_soft_limit for 1 s \(client too slow\)/);
    assert.strictEqual(await slow.closeCode(), 1008);
    await slow.waitClosed(20000);
    const m = await waitFor(async () => {
        const x = await metrics(d);
        return x['dnoded_disconnects_total{reason="slow_consumer_soft"}'] === 1 ? x : null;
    }, { timeoutMs: 10000, what: 'the soft disconnect in /metrics' });
    assert.strictEqual(m['dnoded_disconnects_total{reason="slow_consumer"}'], 0);
});

test('slow consumer over TCP: past max_output_buffer at once, counted as the hard limit',
    async (t) => {
        // A soft limit at the hard one never applies.
        const d = await startDnoded({ config: { output_soft_limit: '256k', output_soft_seconds: 3600,
            max_output_buffer: '256k', max_message_size: '1m' } }, t);
        const slow = await client(d, t);
        const pub = await client(d, t);
        assert.deepStrictEqual(await slow.invoke('subscribe', '/hard'), [null]);
        await starve(d, pub, slow, '/hard',
            /output buffer over max_output_buffer \(client too slow\)/);
        await slow.waitClosed(20000);
        const m = await metrics(d);
        assert.strictEqual(m['dnoded_disconnects_total{reason="slow_consumer"}'], 1);
        assert.strictEqual(m['dnoded_disconnects_total{reason="slow_consumer_soft"}'], 0);
    });
