'use strict';
// WebSocket at /dnode on the real dnoded, driven by a client that writes
// raw frames (tests/lib/raw_http.js): the handshake, one DNode message per
// text frame both ways, fragmented messages with a ping in between,
// ping/pong, the closing handshake, and the framing violations that must
// close only the offending connection with the right code (1007 invalid
// UTF-8, 1009 too big, 1002 unmasked, 1003 binary) or that end abruptly.
// After each one, the worker and a session opened before still work.
// Also allowed_origins on the upgrade. Needs no database.

const test = require('node:test');
const assert = require('node:assert');

const { startDnoded } = require('../lib/harness');
const { WsConn, httpGet, OP, frame } = require('../lib/raw_http');

const MAX_MESSAGE = 4096;

let d;
let witness; // a WebSocket session that must outlive every bad neighbour

test.before(async () => {
    d = await startDnoded({ config: { max_message_size: MAX_MESSAGE } });
    witness = await dnodeWs(d.port);
});

test.after(async () => {
    if (witness) {
        witness.close();
    }
    if (d) {
        await d.close();
    }
});

// Opens a WebSocket DNode session: waits for the server's methods, sends
// ours (exporting updated, subscribed and error under ids 0..2).
async function dnodeWs(port, opts) {
    const c = await WsConn.open(port, opts);
    const methods = await c.nextMessage((m) => m.method === 'methods', 'the methods message');
    assert.deepStrictEqual(Object.keys(methods.arguments[0]).sort(),
        ['auth', 'create', 'delete', 'publish', 'read', 'subscribe', 'unsubscribe', 'update']);
    c.sendJson({
        method: 'methods',
        arguments: [{ updated: '[Function]', subscribed: '[Function]', error: '[Function]' }],
        callbacks: { 0: [0, 'updated'], 1: [0, 'subscribed'], 2: [0, 'error'] },
    });
    c.nextId = 100;
    return c;
}

// Calls method(...args, cb) and resolves with cb's arguments.
async function invoke(c, method, ...args) {
    const id = c.nextId++;
    c.sendJson({ method, arguments: [...args, '[Function]'], callbacks: { [id]: [args.length] } });
    const reply = await c.nextMessage((m) => m.method === id, `the reply to ${method}`);
    return reply.arguments;
}

// The witness session and plain HTTP both still work.
async function stillServing() {
    const [err] = await invoke(witness, 'subscribe', `alive-${Math.random()}`);
    assert.strictEqual(err, null);
    const h = await httpGet(d.port, '/healthz');
    assert.strictEqual(h.status, 200);
}

test('a session over WebSocket exchanges methods and calls', async () => {
    const c = await dnodeWs(d.port);
    try {
        const [err] = await invoke(c, 'subscribe', 'ws-basic');
        assert.strictEqual(err, null);
        const [missing] = await invoke(c, 'subscribe', '');
        assert.strictEqual(missing, 'missing parameters');
    } finally {
        c.close();
    }
});

test('pushes reach WebSocket subscribers, one message per frame', async () => {
    const a = await dnodeWs(d.port);
    const b = await dnodeWs(d.port);
    try {
        assert.deepStrictEqual(await invoke(a, 'subscribe', 'ws-fanout'), [null]);
        assert.deepStrictEqual(await invoke(b, 'subscribe', 'ws-fanout'), [null]);
        const doc = { _id: '0123456789abcdef01234567', title: 'ü and "quotes"\n', n: 1 };
        assert.deepStrictEqual(await invoke(a, 'publish', doc,
            { url: 'ws-fanout', method: 'update' }), [null]);
        for (const c of [a, b]) {
            // By name or by the id we exported it under: both are DNode.
            const push = await c.nextMessage((m) => m.method === 'updated' || m.method === 0,
                'the updated push');
            assert.deepStrictEqual(push.arguments[0], doc);
            assert.strictEqual(push.arguments[1].url, 'ws-fanout');
        }
    } finally {
        a.close();
        b.close();
    }
});

test('many calls in one write are all answered, in order, one frame each', async () => {
    const c = await dnodeWs(d.port);
    try {
        // More than the replies a session gathers before writing (32).
        const ids = [];
        const frames = [];
        for (let i = 0; i < 45; i++) {
            const id = c.nextId++;
            ids.push(id);
            frames.push(frame(OP.TEXT, JSON.stringify({ method: 'subscribe',
                arguments: [`ws-batch-${i}`, '[Function]'], callbacks: { [id]: [1] } })));
        }
        c.sock.write(Buffer.concat(frames));
        const order = [];
        while (order.length < ids.length) {
            const f = await c.nextFrame('a reply');
            assert.strictEqual(f.opcode, OP.TEXT);
            const m = JSON.parse(f.payload.toString('utf8'));
            if (typeof m.method === 'number' && m.method >= 100) {
                assert.deepStrictEqual(m.arguments, [null]);
                order.push(m.method);
            }
        }
        assert.deepStrictEqual(order, ids);
    } finally {
        c.close();
    }
});

test('a call in the same write as a bad frame is answered before the close', async () => {
    const c = await dnodeWs(d.port);
    try {
        const id = c.nextId++;
        c.sock.write(Buffer.concat([
            frame(OP.TEXT, JSON.stringify({ method: 'subscribe',
                arguments: ['ws-before-bad', '[Function]'], callbacks: { [id]: [1] } })),
            frame(OP.TEXT, '{"method":"x"}', { mask: false }),
        ]));
        const reply = await c.nextMessage((m) => m.method === id, 'the reply');
        assert.deepStrictEqual(reply.arguments, [null]);
        assert.strictEqual(await c.closeCode(), 1002);
    } finally {
        c.close();
    }
});

test('a fragmented message with a ping between fragments', async () => {
    const c = await dnodeWs(d.port);
    try {
        const text = JSON.stringify({ method: 'subscribe', arguments: ['ws-frag', '[Function]'],
            callbacks: { 7: [1] } });
        const parts = [text.slice(0, 10), text.slice(10, 30), text.slice(30)];
        c.sendFrame(OP.TEXT, parts[0], { fin: false });
        c.sendFrame(OP.PING, 'between');
        c.sendFrame(OP.CONT, parts[1], { fin: false });
        c.sendFrame(OP.CONT, parts[2], { fin: true });
        // The pong and the reply, in either order (both may go out in one read).
        let pong = null;
        let reply = null;
        while (!pong || !reply) {
            const f = await c.nextFrame('the pong and the reply');
            if (f.opcode === OP.PONG) {
                pong = f;
            } else if (f.opcode === OP.TEXT && JSON.parse(f.payload).method === 7) {
                reply = JSON.parse(f.payload);
            }
        }
        assert.strictEqual(pong.payload.toString(), 'between');
        assert.deepStrictEqual(reply.arguments, [null]);
        // A multi-byte character split across fragments is still valid UTF-8.
        const euro = Buffer.from(JSON.stringify({ method: 'subscribe',
            arguments: ['€uro', '[Function]'], callbacks: { 8: [1] } }));
        const cut = euro.indexOf(0xe2) + 1;
        c.sendFrame(OP.TEXT, euro.subarray(0, cut), { fin: false });
        c.sendFrame(OP.CONT, euro.subarray(cut), { fin: true });
        assert.deepStrictEqual((await c.nextMessage((m) => m.method === 8)).arguments, [null]);
    } finally {
        c.close();
    }
});

test('ping is answered with a pong carrying the same data', async () => {
    const c = await dnodeWs(d.port);
    try {
        c.sendFrame(OP.PING, 'hello?');
        let f;
        do {
            f = await c.nextFrame('the pong');
        } while (f.opcode === OP.TEXT);
        assert.strictEqual(f.opcode, OP.PONG);
        assert.strictEqual(f.payload.toString(), 'hello?');
    } finally {
        c.close();
    }
});

test('the closing handshake: our close is answered, then the server closes', async () => {
    const c = await dnodeWs(d.port);
    const close = Buffer.alloc(2);
    close.writeUInt16BE(1000);
    c.sendFrame(OP.CLOSE, close);
    assert.strictEqual(await c.closeCode(), 1000);
    await c.waitClosed();
    await stillServing();
});

// Sends bad() on a fresh session and expects a close frame with code, then
// the end of the connection, and the rest of the server unaffected.
async function expectClose(bad, code) {
    const c = await dnodeWs(d.port);
    try {
        bad(c);
        assert.strictEqual(await c.closeCode(), code);
        await c.waitClosed();
    } finally {
        c.close();
    }
    await stillServing();
}

test('invalid UTF-8 in a text frame closes with 1007', async () => {
    await expectClose((c) => c.sendFrame(OP.TEXT, Buffer.from([0x7b, 0xc3, 0x28, 0x7d])), 1007);
    // Split across fragments too (an overlong encoding in the last one).
    await expectClose((c) => {
        c.sendFrame(OP.TEXT, Buffer.from('{"a":'), { fin: false });
        c.sendFrame(OP.CONT, Buffer.from([0x22, 0xc0, 0xaf, 0x22, 0x7d]), { fin: true });
    }, 1007);
});

test('a message over max_message_size closes with 1009', async () => {
    const big = JSON.stringify({ method: 'subscribe', arguments: ['x'.repeat(MAX_MESSAGE)] });
    await expectClose((c) => c.sendText(big), 1009);
    // The same size in fragments, each small.
    await expectClose((c) => {
        const chunk = 1000;
        for (let i = 0; i < big.length; i += chunk) {
            c.sendFrame(i === 0 ? OP.TEXT : OP.CONT, big.slice(i, i + chunk),
                { fin: i + chunk >= big.length });
        }
    }, 1009);
    // A frame announcing 4 GiB is refused on its first bytes, not buffered.
    await expectClose((c) => {
        const head = Buffer.from([0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]);
        c.sock.write(Buffer.concat([head, Buffer.alloc(64, 0x20)]));
    }, 1009);
});

test('an unmasked client frame closes with 1002', async () => {
    await expectClose((c) => c.sendFrame(OP.TEXT, '{"method":"x"}', { mask: false }), 1002);
});

test('a binary frame closes with 1003, other protocol errors with 1002', async () => {
    await expectClose((c) => c.sendFrame(OP.BINARY, Buffer.from([1, 2, 3])), 1003);
    await expectClose((c) => c.sendFrame(OP.CONT, 'no start', { fin: true }), 1002);
    await expectClose((c) => c.sendFrame(OP.PING, 'x'.repeat(200)), 1002); // control > 125
    await expectClose((c) => c.sendFrame(0x3, 'reserved opcode'), 1002);
});

test('abrupt ends: mid-frame, mid-handshake, right after the upgrade', async () => {
    const a = await dnodeWs(d.port);
    a.sock.write(Buffer.from([0x81, 0xfe, 0x10, 0x00, 1, 2, 3, 4, 5, 6])); // half a frame
    a.sock.destroy();
    const b = await WsConn.open(d.port);
    b.sock.destroy();
    const net = require('node:net');
    await new Promise((resolve) => {
        const s = net.connect(d.port, '127.0.0.1', () => {
            s.end('GET /dnode HTTP/1.1\r\nHost: x\r\nUpgrade: websock');
        });
        s.on('close', resolve);
        s.on('error', resolve);
        s.resume();
    });
    await stillServing();
});

test('a non-WebSocket request for /dnode and bad handshakes are refused', async () => {
    await assert.rejects(WsConn.open(d.port, { headers: { 'Sec-WebSocket-Version': '8' } }),
        (err) => err.status === 400 || err.status === 426);
    await assert.rejects(WsConn.open(d.port, { path: '/elsewhere' }),
        (err) => err.status >= 400);
    await stillServing();
});

test('Origin: same host allowed, another site refused (no allowed_origins)', async () => {
    const ok = await WsConn.open(d.port, { headers: { Origin: `http://127.0.0.1:${d.port}` } });
    ok.close();
    await assert.rejects(WsConn.open(d.port, { headers: { Origin: 'http://evil.example' } }),
        (err) => err.status === 403);
    await assert.rejects(WsConn.open(d.port, { headers: { Origin: 'null' } }),
        (err) => err.status === 403);
    await assert.rejects(
        WsConn.open(d.port, { headers: { Origin: `http://127.0.0.1:${d.port + 1}` } }),
        (err) => err.status === 403);
});

test('Origin: allowed_origins lists the sites that may connect', async (t) => {
    const d2 = await startDnoded({ config: { allowed_origins: 'http://good.example' } }, t);
    const ok = await WsConn.open(d2.port, { headers: { Origin: 'http://good.example' } });
    ok.close();
    await assert.rejects(WsConn.open(d2.port, { headers: { Origin: 'http://evil.example' } }),
        (err) => err.status === 403);
    // The list is in addition to the server's own origin (README).
    const own = await WsConn.open(d2.port, { headers: { Origin: `http://127.0.0.1:${d2.port}` } });
    own.close();
    // DNS rebinding: a page of evil.example whose name now resolves to the
    // server sends Host and Origin that match each other, not a server name.
    await assert.rejects(WsConn.open(d2.port, {
        host: '127.0.0.1',
        headers: { Host: 'evil.example', Origin: 'http://evil.example' },
    }), (err) => err.status === 403);
    // Clients that are not browsers send no Origin.
    const bare = await WsConn.open(d2.port);
    bare.close();
});

test('a WebSocket subscriber that cannot keep up is closed with 1008', async (t) => {
    const d2 = await startDnoded({ config: { max_output_buffer: '64k' } }, t);
    const slow = await dnodeWs(d2.port);
    const fast = await dnodeWs(d2.port);
    try {
        assert.deepStrictEqual(await invoke(slow, 'subscribe', 'flood'), [null]);
        slow.sock.pause(); // stops reading: the kernel buffers fill, then ours
        const doc = { _id: '0123456789abcdef01234567', text: 'x'.repeat(16000) };
        const since = d2.stderr().length;
        for (let i = 0; i < 400 && !/closing with 1008/.test(d2.stderr().slice(since)); i++) {
            assert.deepStrictEqual(await invoke(fast, 'publish', doc,
                { url: 'flood', method: 'update' }), [null]);
        }
        await d2.waitForLog(/closing with 1008/, { since });
        slow.sock.resume(); // what was buffered, then the close
        assert.strictEqual(await slow.closeCode(), 1008);
        await slow.waitClosed();
        const [err] = await invoke(fast, 'subscribe', 'still-here');
        assert.strictEqual(err, null);
    } finally {
        slow.close();
        fast.close();
    }
});

test('a graceful stop says goodbye with 1001', async (t) => {
    const d3 = await startDnoded({}, t);
    const c = await dnodeWs(d3.port);
    try {
        assert.deepStrictEqual(await invoke(c, 'subscribe', 'bye'), [null]);
        d3.signal('SIGQUIT');
        assert.strictEqual(await c.closeCode(), 1001);
        await c.waitClosed();
        const status = await d3.waitExit();
        assert.strictEqual(status.code, 0);
    } finally {
        c.close();
    }
});

test('ws_ping_interval: silent sessions are pinged; one that never answers is closed',
    async (t) => {
        const p = await startDnoded({ config: { ws_ping_interval: 1 } }, t);
        const live = await dnodeWs(p.port);
        const dead = await dnodeWs(p.port);
        try {
            // A peer that answers each ping with a pong keeps its session.
            for (let i = 0; i < 2; i++) {
                const f = await live.nextFrame('a ping');
                assert.strictEqual(f.opcode, OP.PING);
                live.sendFrame(OP.PONG, f.payload);
            }
            assert.deepStrictEqual(await invoke(live, 'subscribe', 'ws-pinged'), [null]);
            // A silent one is pinged once, then dropped.
            const f = await dead.nextFrame('a ping');
            assert.strictEqual(f.opcode, OP.PING);
            await dead.waitClosed(10000);
            await p.waitForLog(/no pong to our ping/);
            assert.deepStrictEqual(await invoke(live, 'subscribe', 'ws-still'), [null]);
        } finally {
            live.close();
            dead.close();
        }
    });
