'use strict';
// TLS listeners: listen_tls beside a plain listen, one port serving DNode
// over TLS (npm dnode over node:tls), HTTPS and wss://; a certificate
// swapped by reload served to new connections while an old TLS session
// keeps working (until shutdown_timeout, then closed with the reason
// logged); bad certificate or key files refused by -t and by reload with
// the running ones kept; hostile peers on the TLS port (plain text, a
// handshake that never finishes) cost the others nothing. The CA is made by
// the test (tests/lib/tls.js) and every client checks the server against it.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const https = require('node:https');
const net = require('node:net');
const path = require('node:path');
const tls = require('node:tls');

const { startDnoded, runDnoded, renderConfig, DnodeClient } = require('../lib/harness');
const { freePort, sleep, timeScale, findProgram } = require('../lib/proc');
const { startFerretDB } = require('../lib/services');
const { makeCA, haveOpenssl } = require('../lib/tls');
const { httpGet } = require('../lib/raw_http');

function metric(text, name) {
    const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
    return m ? Number(m[1]) : null;
}

const skip = haveOpenssl() ? false : 'needs the openssl program (scripts/setup)';

// dnoded with one plain and one TLS listener, serving the certificate
// cert.pem/cert.key in the CA's directory (copied there from `issued`, so a
// test can swap it and reload).
async function startTls(t, ca, issued, config = {}) {
    const tlsPort = await freePort();
    const cert = path.join(ca.dir, 'live.pem');
    const key = path.join(ca.dir, 'live.key');
    fs.copyFileSync(issued.cert, cert);
    fs.copyFileSync(issued.key, key);
    fs.chmodSync(key, 0o600);
    const d = await startDnoded({
        config: {
            workers: 2,
            listen_tls: `127.0.0.1:${tlsPort}`,
            tls_certificate: cert,
            tls_certificate_key: key,
            ...config,
        },
    }, t);
    d.tlsPort = tlsPort;
    d.swapCertificate = (next) => {
        fs.copyFileSync(next.cert, cert);
        fs.copyFileSync(next.key, key);
    };
    return d;
}

function tlsOptions(ca) {
    return { ca: ca.ca, servername: 'localhost' };
}

// The serial of the certificate a new TLS connection is shown.
function servedSerial(port, ca) {
    return new Promise((resolve, reject) => {
        const s = tls.connect({ port, host: '127.0.0.1', ...tlsOptions(ca) }, () => {
            const serial = s.getPeerCertificate().serialNumber;
            s.destroy();
            resolve(serial.replace(/^0+/, ''));
        });
        s.on('error', reject);
    });
}

// method(...args, opt) with opt.error: resolves { doc } or { error }.
function crud(c, method, ...args) {
    return new Promise((resolve) => {
        const opt = { ...args[args.length - 1], error: (error) => resolve({ error }) };
        c.call(method, ...args.slice(0, -1), opt, (doc) => resolve({ doc }));
    });
}

async function tlsClient(t, d, ca, methods = {}) {
    const pushes = {};
    for (const name of ['created', 'updated', 'deleted', 'subscribed', 'unsubscribed']) {
        pushes[name] = () => {};
    }
    const c = await DnodeClient.connect(d.tlsPort, { methods: { ...pushes, ...methods },
        tlsOptions: tlsOptions(ca) });
    t.after(() => c.close());
    await c.ready;
    return c;
}

test('one TLS port serves npm dnode, HTTPS and wss:// beside a plain listener', { skip },
    async (t) => {
        const ca = makeCA(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-ca-')));
        t.after(() => fs.rmSync(ca.dir, { recursive: true, force: true }));
        const d = await startTls(t, ca, ca.issue('first'));
        const url = `/tls/${Date.now()}`;

        // npm dnode over node:tls subscribes; a plain TCP client publishes.
        const dnode = require('dnode');
        const sock = tls.connect({ port: d.tlsPort, host: '127.0.0.1', ...tlsOptions(ca) });
        t.after(() => sock.destroy());
        let onCreated;
        const pushed = new Promise((resolve) => { onCreated = resolve; });
        const subscribed = new Promise((resolve) => {
            const client = dnode({ created: (doc, opt) => onCreated({ doc, opt }) },
                { weak: false });
            client.on('remote', (remote) => remote.subscribe(url, resolve));
            sock.pipe(client).pipe(sock);
        });
        assert.strictEqual(await subscribed, null);
        const pub = await d.connect();
        t.after(() => pub.close());
        await pub.ready;
        pub.call('publish', { n: 1 }, { url, method: 'create' }, () => {});
        const got = await pushed;
        assert.deepStrictEqual(got.doc, { n: 1 });
        assert.strictEqual(got.opt.url, url);
        assert.strictEqual(sock.authorized, true, 'the client verified the server with the CA');
        assert.match(sock.getProtocol(), /^TLSv1\.[23]$/);

        // HTTPS: the browser client from the same port.
        const body = await new Promise((resolve, reject) => {
            https.get({ host: '127.0.0.1', port: d.tlsPort, path: '/dnode.js', ...tlsOptions(ca) },
                (res) => {
                    let text = '';
                    res.setEncoding('utf8');
                    res.on('data', (x) => { text += x; });
                    res.on('end', () => resolve({ status: res.statusCode, text }));
                }).on('error', reject);
        });
        assert.strictEqual(body.status, 200);
        assert.match(body.text, /dnode/i);

        // wss:// with the page's https origin.
        const WebSocket = require('ws');
        const ws = new WebSocket(`wss://localhost:${d.tlsPort}/dnode`, {
            ca: ca.ca, origin: `https://localhost:${d.tlsPort}`,
        });
        t.after(() => ws.terminate());
        const first = await new Promise((resolve, reject) => {
            ws.once('message', (m) => resolve(JSON.parse(m.toString())));
            ws.once('error', reject);
        });
        assert.strictEqual(first.method, 'methods');
        assert.ok(first.arguments[0].subscribe !== undefined, 'the methods message over wss');

        // The plain listener is still plain.
        const plain = await d.connect();
        t.after(() => plain.close());
        assert.strictEqual((await plain.ready).method, 'methods');
    });

test('hostile peers on the TLS port are closed and cost the others nothing', { skip },
    async (t) => {
        const ca = makeCA(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-ca-')));
        t.after(() => fs.rmSync(ca.dir, { recursive: true, force: true }));
        const d = await startTls(t, ca, ca.issue('first'), { workers: 1, http_header_timeout: 1 });
        const good = await tlsClient(t, d, ca);

        // Plain DNode on the TLS port: refused as a failed handshake.
        const since = d.stderr().length;
        const plain = net.connect({ port: d.tlsPort, host: '127.0.0.1' });
        t.after(() => plain.destroy());
        plain.on('error', () => {}); // reset by the server: expected
        plain.write('{"method":"methods","arguments":[{}],"callbacks":{}}\n');
        await new Promise((resolve) => plain.on('close', resolve));
        await d.waitForLog(/closed: TLS: .*(wrong version|http request|record)/i, { since });

        // A handshake that never finishes is closed after http_header_timeout.
        const started = Date.now();
        const stall = net.connect({ port: d.tlsPort, host: '127.0.0.1' });
        t.after(() => stall.destroy());
        stall.on('error', () => {});
        stall.write(Buffer.from([0x16, 0x03, 0x01])); // the start of a record, then nothing
        await new Promise((resolve) => stall.on('close', resolve));
        const took = Date.now() - started;
        assert.ok(took >= 900 && took < 5000 * timeScale, `stalled handshake closed after ${took} ms`);
        await d.waitForLog(/TLS handshake not finished/, { since });

        // The good session never noticed.
        assert.deepStrictEqual(await good.invoke('subscribe', '/tls/still'), [null]);

        // /metrics counts both sides.
        const m = (await httpGet(d.port, '/metrics')).body.toString();
        assert.ok(metric(m, 'dnoded_tls_handshakes_total') >= 1, m);
        assert.ok(metric(m, 'dnoded_tls_handshakes_failed_total') >= 2, m);
    });

test('reload serves a new certificate to new connections; an old TLS session keeps working',
    { skip }, async (t) => {
        const ca = makeCA(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-ca-')));
        t.after(() => fs.rmSync(ca.dir, { recursive: true, force: true }));
        const first = ca.issue('first');
        const second = ca.issue('second');
        const d = await startTls(t, ca, first, { shutdown_timeout: 4 });
        assert.strictEqual(await servedSerial(d.tlsPort, ca), first.serial);
        const url = `/tls/reload/${Date.now()}`;
        const old = await tlsClient(t, d, ca);
        assert.deepStrictEqual(await old.invoke('subscribe', url), [null]);

        d.swapCertificate(second);
        let since = d.stderr().length;
        d.signal('SIGHUP');
        await d.waitForLog(/reloaded: generation 2 started/, { since });
        await d.waitForLog(/TLS sessions stay here until they end or shutdown_timeout/, { since });
        assert.strictEqual(await servedSerial(d.tlsPort, ca), second.serial,
            'a new connection gets the new certificate');

        // The old session still calls and still receives pushes, from a
        // publisher on the new generation.
        assert.deepStrictEqual(await old.invoke('subscribe', `${url}/more`), [null]);
        const pub = await d.connect();
        t.after(() => pub.close());
        await pub.ready;
        pub.call('publish', { n: 2 }, { url, method: 'create' }, () => {});
        const push = await old.nextCall('created');
        assert.deepStrictEqual(push[0], { n: 2 });

        // Past shutdown_timeout it is closed, with the reason in the log.
        await old.waitClosed(15000 * timeScale);
        await d.waitForLog(/TLS session stays with its worker until shutdown_timeout/, { since });

        // A bad certificate on reload: refused, the running one kept.
        fs.writeFileSync(path.join(ca.dir, 'live.pem'), 'not a certificate\n');
        since = d.stderr().length;
        d.signal('SIGHUP');
        await d.waitForLog(/reload failed, still running the previous configuration: tls_certificate/,
            { since });
        assert.strictEqual(await servedSerial(d.tlsPort, ca), second.serial);
    });

test('a TLS connection still before its handshake at a reload is served, not cut', { skip },
    async (t) => {
        const ca = makeCA(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-ca-')));
        t.after(() => fs.rmSync(ca.dir, { recursive: true, force: true }));
        const d = await startTls(t, ca, ca.issue('first'), { shutdown_timeout: 4 });
        // Connected, nothing sent yet: the handshake has not started.
        const raw = net.connect({ port: d.tlsPort, host: '127.0.0.1' });
        t.after(() => raw.destroy());
        raw.on('error', () => {});
        await new Promise((resolve) => raw.once('connect', resolve));
        await sleep(200); // accepted by a worker of generation 1
        const since = d.stderr().length;
        d.signal('SIGHUP');
        await d.waitForLog(/reloaded: generation 2 started/, { since });
        await sleep(300); // the retiring worker has drained what it would
        assert.ok(!raw.destroyed && raw.readyState === 'open', 'closed by the reload');
        const sock = tls.connect({ socket: raw, ...tlsOptions(ca) });
        await new Promise((resolve, reject) => {
            sock.once('secureConnect', resolve);
            sock.once('error', reject);
        });
        const c = new DnodeClient(sock, { methods: {} });
        t.after(() => c.close());
        c.send(c.request('methods', [{}]));
        await c.ready;
        assert.deepStrictEqual(await c.invoke('subscribe', '/tls/late'), [null]);
    });

test('dnoded -t refuses missing, unreadable or mismatched certificate and key files', { skip },
    async (t) => {
        const ca = makeCA(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-ca-')));
        t.after(() => fs.rmSync(ca.dir, { recursive: true, force: true }));
        const a = ca.issue('a');
        const b = ca.issue('b');
        const models = path.join(ca.dir, 'models.json');
        fs.writeFileSync(models, JSON.stringify({ todo: { collection: 'todos',
            fields: { title: { type: 'String' } } } }));
        const check = (keys) => {
            const conf = path.join(ca.dir, 'check.conf');
            fs.writeFileSync(conf, renderConfig({ listen: '127.0.0.1:1', models,
                listen_tls: '127.0.0.1:2', ...keys }));
            return runDnoded(['-t', '-c', conf]);
        };
        const ok = check({ tls_certificate: a.cert, tls_certificate_key: a.key });
        assert.strictEqual(ok.code, 0, ok.stderr);
        assert.doesNotMatch(ok.stderr, /expire/);
        // A certificate about to expire is served, with a warning.
        const soon = ca.issue('soon', { days: 3 });
        const warned = check({ tls_certificate: soon.cert, tls_certificate_key: soon.key });
        assert.strictEqual(warned.code, 0, warned.stderr);
        assert.match(warned.stderr, /warning: the TLS certificate .*CN ?= ?soon.* expires in [23] days? /);

        const cases = [
            [{}, /listen_tls needs tls_certificate and tls_certificate_key/],
            [{ tls_certificate: a.cert }, /go together/],
            [{ tls_certificate: path.join(ca.dir, 'none.pem'), tls_certificate_key: a.key },
                /tls_certificate .*none\.pem/],
            [{ tls_certificate: a.key, tls_certificate_key: a.key }, /tls_certificate .*a\.key/],
            [{ tls_certificate: a.cert, tls_certificate_key: b.key },
                /tls_certificate_key does not match tls_certificate/],
            [{ tls_certificate: a.cert, tls_certificate_key: a.key, tls_ciphers: 'NOTHING-REAL' },
                /tls_ciphers names no usable cipher/],
            [{ tls_certificate: a.cert, tls_certificate_key: a.key, tls_protocols: 'SSLv3' },
                /tls_protocols/],
        ];
        // An encrypted key: refused at once, never a passphrase prompt (the
        // check runs with a terminal-less stdin that would not answer).
        const encrypted = path.join(ca.dir, 'encrypted.key');
        require('node:child_process').execFileSync('openssl', ['pkey', '-in', a.key, '-aes256',
            '-passout', 'pass:secret', '-out', encrypted]);
        cases.push([{ tls_certificate: a.cert, tls_certificate_key: encrypted },
            /tls_certificate_key is encrypted/]);
        for (const [keys, re] of cases) {
            const r = check(keys);
            assert.strictEqual(r.code, 1, `${JSON.stringify(keys)} was accepted`);
            assert.match(r.stderr, re);
        }

        // A world-readable private key is warned about.
        fs.chmodSync(a.key, 0o644);
        const readable = check({ tls_certificate: a.cert, tls_certificate_key: a.key });
        assert.strictEqual(readable.code, 0);
        assert.match(readable.stderr, /a\.key holds a secret and every user can read it/);
        await sleep(0);
    });

test('mongodb_uri over TLS: FerretDB behind its TLS listener, checked against the CA the URI names',
    { skip: skip || (!findProgram('ferretdb', 'DNODED_TEST_FERRETDB') && 'needs ferretdb') },
    async (t) => {
        const ca = makeCA(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-ca-')));
        t.after(() => fs.rmSync(ca.dir, { recursive: true, force: true }));
        const db = await startFerretDB({ tls: ca.issue('ferretdb') });
        t.after(() => db.close());
        const uri = (caFile) => `mongodb://localhost:${db.tlsPort}/tlsdb?tls=true` +
            `&tlsCAFile=${encodeURIComponent(caFile)}&serverSelectionTimeoutMS=2000`;

        const d = await startDnoded({ mongodbUri: uri(ca.caPath) }, t);
        const c = await d.connect();
        t.after(() => c.close());
        await c.ready;
        const created = await crud(c, 'create', { title: 'over TLS' }, { type: 'todo' });
        assert.ok(created.doc && created.doc._id, JSON.stringify(created));
        const read = await crud(c, 'read', { type: 'todo', query: { _id: created.doc._id } });
        assert.strictEqual(read.doc && read.doc.title, 'over TLS', JSON.stringify(read));
        await d.close();

        // A CA that did not sign FerretDB's certificate: refused, and said so.
        const other = makeCA(fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-ca-')));
        t.after(() => fs.rmSync(other.dir, { recursive: true, force: true }));
        const bad = await startDnoded({ mongodbUri: uri(other.caPath),
            config: { db_timeout_ms: 3000 } }, t);
        const b = await bad.connect();
        t.after(() => b.close());
        await b.ready;
        const refused = await crud(b, 'create', { title: 'never stored' }, { type: 'todo' });
        assert.ok(refused.error && /^(DatabaseError|Unavailable)$/.test(refused.error.name),
            `got ${JSON.stringify(refused)}`);
        await bad.waitForLog(/database unavailable .*TLS handshake failed: certificate verify failed/);
    });
