'use strict';
// HTTP on the DNode port of the real dnoded: static files from docroot
// (types, lengths, ETag/Last-Modified and 304), no way out of the docroot
// (dot segments plain or encoded, encoded slashes, symlinks), keep-alive
// and pipelining, the client files served without a docroot copy,
// /healthz, and /metrics in the Prometheus text format with counters that
// move when DNode traffic flows. Needs no database: nothing here stores.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startDnoded } = require('../lib/harness');
const { HttpConn, httpGet } = require('../lib/raw_http');

const SECRET = 'top secret, outside the docroot';

let d;
let top;     // temp dir holding docroot/ and secret.txt beside it
let root;

test.before(async () => {
    top = fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-http-'));
    root = path.join(top, 'docroot');
    fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(top, 'secret.txt'), SECRET);
    fs.writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>t</title>\n');
    fs.writeFileSync(path.join(root, 'app.js'), 'var x = 1;\n');
    fs.writeFileSync(path.join(root, 'app.css'), 'body { color: red }\n');
    fs.writeFileSync(path.join(root, 'models.json'), '{"a": 1}\n');
    fs.writeFileSync(path.join(root, 'blob.bin'), Buffer.from([0, 1, 2, 3, 255]));
    fs.writeFileSync(path.join(root, 'sub', 'index.html'), 'sub index\n');
    fs.writeFileSync(path.join(root, 'sub', 'page.txt'), 'inside\n');
    fs.writeFileSync(path.join(root, '.hidden'), 'hidden\n');
    fs.symlinkSync(path.join(top, 'secret.txt'), path.join(root, 'escape.txt'));
    fs.symlinkSync(top, path.join(root, 'updir'));
    fs.symlinkSync(path.join(root, 'sub', 'page.txt'), path.join(root, 'alias.txt'));
    d = await startDnoded({ config: { docroot: root } });
});

test.after(async () => {
    try {
        if (d) {
            await d.close();
        }
    } finally {
        fs.rmSync(top, { recursive: true, force: true });
    }
});

test('/healthz answers ok', async () => {
    const r = await httpGet(d.port, '/healthz');
    assert.strictEqual(r.status, 200);
    assert.strictEqual(r.text, 'ok\n');
});

test('static files come with their type, length and validators', async () => {
    const cases = [
        ['/', 'text/html', 'index.html'],
        ['/index.html', 'text/html', 'index.html'],
        ['/app.js', 'text/javascript', 'app.js'],
        ['/app.css', 'text/css', 'app.css'],
        ['/models.json', 'application/json', 'models.json'],
        ['/blob.bin', 'application/octet-stream', 'blob.bin'],
        ['/sub/', 'text/html', 'sub/index.html'],
        ['/sub/page.txt', 'text/plain', 'sub/page.txt'],
        ['/alias.txt', 'text/plain', 'sub/page.txt'], // a symlink that stays inside
        ['/app%2Ejs', 'text/javascript', 'app.js'],   // an encoded dot inside a name is fine
    ];
    for (const [target, type, file] of cases) {
        const r = await httpGet(d.port, target);
        const want = fs.readFileSync(path.join(root, file));
        assert.strictEqual(r.status, 200, target);
        assert.ok(r.headers['content-type'].startsWith(type),
            `${target}: ${r.headers['content-type']}`);
        assert.strictEqual(Number(r.headers['content-length']), want.length, target);
        assert.deepStrictEqual(r.body, want, target);
        assert.match(r.headers.etag, /^"[^"]+"$/, target);
        assert.ok(!Number.isNaN(Date.parse(r.headers['last-modified'])), target);
    }
});

test('HEAD sends the headers without the body', async () => {
    const c = await HttpConn.open(d.port);
    try {
        const r = await c.request('/app.js', { method: 'HEAD' });
        assert.strictEqual(r.status, 200);
        assert.strictEqual(Number(r.headers['content-length']), 11);
        // The next answer on the socket starts right away: no body was sent.
        const r2 = await c.request('/healthz');
        assert.strictEqual(r2.text, 'ok\n');
    } finally {
        c.close();
    }
});

test('a matching ETag or an unchanged date answers 304, a change answers 200', async () => {
    const file = path.join(root, 'changing.txt');
    fs.writeFileSync(file, 'version one\n');
    const first = await httpGet(d.port, '/changing.txt');
    assert.strictEqual(first.status, 200);
    const etag = first.headers.etag;

    const same = await httpGet(d.port, '/changing.txt', { headers: { 'If-None-Match': etag } });
    assert.strictEqual(same.status, 304);
    assert.strictEqual(same.body.length, 0);
    assert.strictEqual(same.headers.etag, etag);

    const listed = await httpGet(d.port, '/changing.txt',
        { headers: { 'If-None-Match': `"nope", ${etag}` } });
    assert.strictEqual(listed.status, 304);

    const other = await httpGet(d.port, '/changing.txt', { headers: { 'If-None-Match': '"x"' } });
    assert.strictEqual(other.status, 200);

    const since = await httpGet(d.port, '/changing.txt',
        { headers: { 'If-Modified-Since': first.headers['last-modified'] } });
    assert.strictEqual(since.status, 304);

    fs.writeFileSync(file, 'version two, longer\n');
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(file, later, later);
    const changed = await httpGet(d.port, '/changing.txt', { headers: { 'If-None-Match': etag } });
    assert.strictEqual(changed.status, 200);
    assert.strictEqual(changed.text, 'version two, longer\n');
    assert.notStrictEqual(changed.headers.etag, etag);
});

test('paths that leave the docroot are refused, encoded or not', async () => {
    const attempts = [
        '/../secret.txt',
        '/sub/../../secret.txt',
        '/%2e%2e/secret.txt',
        '/%2E%2E/secret.txt',
        '/.%2e/secret.txt',
        '/sub/%2e%2e/%2e%2e/secret.txt',
        '/..%2fsecret.txt',
        '/sub%2f..%2f..%2fsecret.txt',
        '/..%5csecret.txt',
        '/..\\secret.txt',
        '/%252e%252e/secret.txt',
        '/escape.txt',             // symlink to a file outside
        '/updir/secret.txt',       // symlink to a directory outside
        '/updir/docroot/../secret.txt',
        '/secret.txt%00.html',
        '/./secret.txt',
    ];
    for (const target of attempts) {
        const r = await httpGet(d.port, target);
        assert.ok(r.status >= 400 && r.status < 500, `${target} answered ${r.status}`);
        assert.ok(!r.text.includes(SECRET), `${target} leaked the file`);
    }
    const escape = await httpGet(d.port, '/escape.txt');
    assert.strictEqual(escape.status, 403);
    const dots = await httpGet(d.port, '/%2e%2e/secret.txt');
    assert.strictEqual(dots.status, 403);
    const hidden = await httpGet(d.port, '/.hidden');
    assert.strictEqual(hidden.status, 404);
    const missing = await httpGet(d.port, '/nothing-here.js');
    assert.strictEqual(missing.status, 404);
});

test('keep-alive: requests one after another and pipelined on one socket', async () => {
    const c = await HttpConn.open(d.port);
    try {
        const a = await c.request('/app.js');
        assert.strictEqual(a.status, 200);
        assert.strictEqual(a.headers.connection, 'keep-alive');
        const b = await c.request('/app.css');
        assert.strictEqual(b.text, 'body { color: red }\n');
        // Pipelined: three requests in one write, answered in order.
        c.sock.write(['/healthz', '/app.js', '/sub/page.txt'].map((p) =>
            `GET ${p} HTTP/1.1\r\nHost: x\r\n\r\n`).join(''));
        assert.strictEqual((await c.response()).text, 'ok\n');
        assert.strictEqual((await c.response()).text, 'var x = 1;\n');
        assert.strictEqual((await c.response()).text, 'inside\n');
        // Connection: close is honoured.
        const last = await c.request('/healthz', { headers: { Connection: 'close' } });
        assert.strictEqual(last.headers.connection, 'close');
        await c.reader.waitClosed();
    } finally {
        c.close();
    }
});

test('bad requests get 4xx and the worker carries on', async () => {
    const post = await httpGet(d.port, '/app.js', { method: 'POST' });
    assert.strictEqual(post.status, 405);
    const plain = await httpGet(d.port, '/dnode');
    assert.strictEqual(plain.status, 426);
    const c = await HttpConn.open(d.port);
    c.sock.write('GET /app.js HTTP/1.1\r\nHost x\r\n\r\n'); // no colon: unparsable
    const bad = await c.response();
    assert.strictEqual(bad.status, 400);
    await c.reader.waitClosed();
    const ok = await httpGet(d.port, '/healthz');
    assert.strictEqual(ok.status, 200);
});

test('the client files are served even when the docroot has none', async () => {
    for (const name of ['dnode.js', 'dnode.backbone.js']) {
        assert.ok(!fs.existsSync(path.join(root, name)));
        const r = await httpGet(d.port, `/${name}`);
        assert.strictEqual(r.status, 200, name);
        assert.ok(r.headers['content-type'].startsWith('text/javascript'));
        const src = path.join(process.env.DNODED_SRCDIR || path.join(__dirname, '..', '..'),
            'browser', name);
        assert.deepStrictEqual(r.body, fs.readFileSync(src), name);
    }
});

test('a plain HTTP connection is not a DNode session and closes when idle', async () => {
    const c = await HttpConn.open(d.port);
    try {
        const r = await c.request('/healthz');
        assert.strictEqual(r.status, 200);
        const m = parseMetrics((await httpGet(d.port, '/metrics')).text);
        assert.strictEqual(m.get('dnoded_sessions{transport="tcp"}'), 0);
        assert.strictEqual(m.get('dnoded_sessions{transport="websocket"}'), 0);
        // The idle keep-alive timeout (15 s) closes it; no methods message ever came.
        await c.reader.waitClosed(40000);
        assert.strictEqual(c.reader.buf.length, 0);
    } finally {
        c.close();
    }
});

// "name{labels} value" lines into a Map, checking the 0.0.4 text format on
// the way: every sample's family has one TYPE line before it, values are
// numbers, histogram buckets are cumulative.
function parseMetrics(text) {
    const types = new Map();
    const samples = new Map();
    assert.ok(text.endsWith('\n'), 'the exposition ends with a newline');
    for (const line of text.split('\n')) {
        if (line === '') {
            continue;
        }
        let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
        if (m) {
            if (m[1] === 'TYPE') {
                assert.ok(!types.has(m[2]), `two TYPE lines for ${m[2]}`);
                assert.ok(['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]));
                types.set(m[2], m[3]);
            }
            continue;
        }
        m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? (\S+)$/
            .exec(line);
        assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
        const family = m[1].replace(/_(bucket|sum|count)$/, '');
        assert.ok(types.has(m[1]) || types.has(family), `no TYPE before ${m[1]}`);
        const value = Number(m[4]);
        assert.ok(!Number.isNaN(value) || /^[+-]Inf$|^NaN$/.test(m[4]), line);
        assert.ok(!samples.has(m[1] + (m[2] || '')), `duplicate sample ${line}`);
        samples.set(m[1] + (m[2] || ''), value);
    }
    for (const [name, type] of types) {
        if (type === 'histogram') {
            let prev = 0;
            for (const [k, v] of samples) {
                if (k.startsWith(`${name}_bucket{`)) {
                    assert.ok(v >= prev, `${k} is not cumulative`);
                    prev = v;
                }
            }
            assert.strictEqual(samples.get(`${name}_bucket{le="+Inf"}`),
                samples.get(`${name}_count`));
        }
    }
    return samples;
}

test('/metrics is Prometheus text and its counters move with traffic', async () => {
    const res = await httpGet(d.port, '/metrics');
    assert.strictEqual(res.status, 200);
    assert.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/);
    const before = parseMetrics(res.text);
    for (const name of ['dnoded_sessions{transport="tcp"}', 'dnoded_messages_received_total',
        'dnoded_messages_sent_total', 'dnoded_errors_total{name="InvalidRequest"}',
        'dnoded_disconnects_total{reason="client_closed"}', 'dnoded_db_latency_seconds_count',
        'dnoded_bus_publish_seconds_count', 'dnoded_messages_rejected_total{reason="malformed"}']) {
        assert.ok(before.has(name), `missing ${name}`);
    }

    // A DNode session over TCP: the methods exchange, a subscribe, a bad
    // message and an unknown method (both reported as InvalidRequest).
    const c = await d.connect({ methods: { error() {} } });
    const [err] = await c.invoke('subscribe', 'metrics-test');
    assert.strictEqual(err, null);
    c.sendRaw('{not json\n');
    await c.nextCall('error');
    c.send({ method: 'nosuchmethod', arguments: [], callbacks: {}, links: [] });
    await c.nextCall('error');
    const during = parseMetrics((await httpGet(d.port, '/metrics')).text);
    assert.strictEqual(during.get('dnoded_sessions{transport="tcp"}'),
        before.get('dnoded_sessions{transport="tcp"}') + 1);
    c.close();
    await c.waitClosed();

    // The teardown is asynchronous: poll until the session is gone.
    let after;
    for (let i = 0; i < 100; i++) {
        after = parseMetrics((await httpGet(d.port, '/metrics')).text);
        if (after.get('dnoded_sessions{transport="tcp"}') === before.get('dnoded_sessions{transport="tcp"}')) {
            break;
        }
        await new Promise((r) => setTimeout(r, 50));
    }
    const moved = (k) => after.get(k) - before.get(k);
    assert.strictEqual(moved('dnoded_sessions{transport="tcp"}'), 0);
    assert.strictEqual(moved('dnoded_sessions_opened_total{transport="tcp"}'), 1);
    assert.strictEqual(moved('dnoded_sessions_closed_total{transport="tcp"}'), 1);
    assert.ok(moved('dnoded_messages_received_total') >= 4);
    assert.ok(moved('dnoded_messages_sent_total') >= 3);
    assert.strictEqual(moved('dnoded_messages_rejected_total{reason="malformed"}'), 1);
    assert.strictEqual(moved('dnoded_messages_rejected_total{reason="unknown_method"}'), 1);
    assert.strictEqual(moved('dnoded_errors_total{name="InvalidRequest"}'), 2);
    assert.strictEqual(moved('dnoded_disconnects_total{reason="client_closed"}'), 1);
    assert.ok(moved('dnoded_http_requests_total{code="2xx"}') >= 2);
});

// Connections each worker accepted after byte offset since of the log.
test('/metrics answered by any worker sums the counters of every worker', async (t) => {
    const d2 = await startDnoded({ config: { workers: 2, docroot: root } }, t);
    const pids = await d2.waitWorkers(2);
    const clients = [];
    try {
        // Eight sessions on each worker.
        for (const w of pids) {
            await d2.withOnlyWorker(w, async () => {
                const batch = await Promise.all(Array.from({ length: 8 }, () => d2.connect()));
                clients.push(...batch);
                await Promise.all(batch.map((c) => c.ready));
            });
        }
        // Each worker alone answers /metrics with the sum of both.
        for (const w of pids) {
            const a = await d2.withOnlyWorker(w, () => httpGet(d2.port, '/metrics'));
            const m = parseMetrics(a.text);
            assert.strictEqual(m.get('dnoded_sessions_opened_total{transport="tcp"}'),
                clients.length, `worker ${w} counts every worker's sessions`);
            assert.strictEqual(m.get('dnoded_sessions{transport="tcp"}'), clients.length);
        }
    } finally {
        for (const c of clients) {
            c.close();
        }
    }
});
