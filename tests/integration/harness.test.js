'use strict';
// The dnoded harness itself, run against a stand-in server (a few lines of
// node that speak enough DNode): config generation, waiting for the port,
// the raw DNode client, stderr capture, and that a sanitizer report, a hang,
// an early exit or a leftover process each fail the test.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startDnoded, renderConfig } = require('../lib/harness');
const { waitFor, groupMembers } = require('../lib/proc');

// Reads "listen = host:port" from the -c file, serves one DNode method
// echo(args..., cb) -> cb(args...), and misbehaves as FAKE_MODE says.
const FAKE_SERVER = `
const fs = require('fs');
const net = require('net');
const { spawn } = require('child_process');
const conf = fs.readFileSync(process.argv[process.argv.indexOf('-c') + 1], 'utf8');
const [host, port] = /^listen = (.*):(\\d+)$/m.exec(conf).slice(1);
const mode = process.env.FAKE_MODE || 'ok';
const srv = net.createServer((sock) => {
    sock.write(JSON.stringify({ method: 'methods', arguments: [{ echo: '[Function]' }],
        callbacks: { 0: ['0', 'echo'] }, links: [] }) + '\\n');
    let buf = '';
    sock.on('error', () => {});
    sock.on('data', (d) => {
        if (mode === 'crash') process.exit(3);
        buf += d;
        let i;
        while ((i = buf.indexOf('\\n')) >= 0) {
            const msg = JSON.parse(buf.slice(0, i));
            buf = buf.slice(i + 1);
            if (msg.method !== 0) continue;
            const last = String(msg.arguments.length - 1);
            const id = Object.keys(msg.callbacks).find((k) => msg.callbacks[k].join() === last);
            sock.write(JSON.stringify({ method: Number(id), arguments: msg.arguments.slice(0, -1),
                callbacks: {}, links: [] }) + '\\n');
        }
    });
});
srv.listen(Number(port), host, () => process.stderr.write('fake: listening on ' + port + '\\n'));
if (mode === 'orphan') spawn('sleep', ['600'], { stdio: 'ignore' });
process.on('SIGTERM', () => {
    if (mode === 'hang') return;
    if (mode === 'asan') process.stderr.write('==1==ERROR: AddressSanitizer: heap-use-after-free\\n');
    process.exit(0);
});
`;

function fakeBin(t) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-fake-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const bin = path.join(dir, 'fake-dnoded');
    fs.writeFileSync(bin, `#!${process.execPath}\n${FAKE_SERVER}`, { mode: 0o755 });
    return bin;
}

test('renderConfig repeats array keys and leaves out null ones', () => {
    assert.strictEqual(renderConfig({ listen: ['a:1', 'b:2'], redis_url: null, workers: 2 }),
        '# written by tests/lib/harness.js\nlisten = a:1\nlisten = b:2\nworkers = 2\n');
});

test('the harness starts a server, talks DNode to it and stops it cleanly', async (t) => {
    const d = await startDnoded({
        bin: fakeBin(t),
        mongodbUri: 'mongodb://127.0.0.1:1/x',
        config: { max_read_limit: 7, log_level: 'debug' },
    });
    const conf = fs.readFileSync(d.configPath, 'utf8');
    assert.match(conf, new RegExp(`^listen = 127\\.0\\.0\\.1:${d.port}$`, 'm'));
    assert.match(conf, /^mongodb_uri = mongodb:\/\/127\.0\.0\.1:1\/x$/m);
    assert.match(conf, /^max_read_limit = 7$/m);
    assert.match(conf, /^log_level = debug$/m);
    assert.doesNotMatch(conf, /^redis_url/m);
    assert.deepStrictEqual(JSON.parse(fs.readFileSync(d.modelsPath, 'utf8')).todo.collection,
        'todos');

    const c = await d.connect();
    t.after(() => c.close());
    const methods = await c.ready;
    assert.deepStrictEqual(methods.arguments, [{ echo: '[Function]' }]);
    assert.deepStrictEqual(await c.invoke('echo', { a: 1 }, 'two'), [{ a: 1 }, 'two']);
    assert.match(await d.waitForLog(/listening on/), new RegExp(`listening on ${d.port}`));

    const r = await d.stop();
    assert.strictEqual(r.code, 0);
    assert.strictEqual(d.running, false);
});

test('a sanitizer report on stderr fails stop()', async (t) => {
    const d = await startDnoded({ bin: fakeBin(t), env: { FAKE_MODE: 'asan' } });
    t.after(() => fs.rmSync(d.dir, { recursive: true, force: true }));
    await assert.rejects(d.stop(), /sanitizer report:\n[\s\S]*AddressSanitizer: heap-use-after-free/);
});

test('a server that ignores SIGTERM is killed and fails stop()', async (t) => {
    const d = await startDnoded({ bin: fakeBin(t), env: { FAKE_MODE: 'hang' } });
    t.after(() => fs.rmSync(d.dir, { recursive: true, force: true }));
    const pid = d.pid;
    await assert.rejects(d.stop({ timeoutMs: 300 }), /did not exit within 300 ms/);
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
});

test('a server that exits by itself fails stop()', async (t) => {
    const d = await startDnoded({ bin: fakeBin(t), env: { FAKE_MODE: 'crash' } });
    t.after(() => fs.rmSync(d.dir, { recursive: true, force: true }));
    const c = await d.connect();
    await c.waitClosed();
    await waitFor(() => !d.running, { what: 'the stand-in to exit' });
    await assert.rejects(d.stop(), /exited before it was stopped \(\{"code":3/);
});

test('processes left in the server\'s group fail stop() and are killed', async (t) => {
    const d = await startDnoded({ bin: fakeBin(t), env: { FAKE_MODE: 'orphan' } });
    t.after(() => fs.rmSync(d.dir, { recursive: true, force: true }));
    const pgid = d.pid;
    await assert.rejects(d.stop(), /processes left behind/);
    assert.deepStrictEqual(groupMembers(pgid), []);
});

test('a server that never listens makes startDnoded() reject with its stderr', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-fake-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const bin = path.join(dir, 'broken-dnoded');
    fs.writeFileSync(bin, '#!/bin/sh\necho "config: no such key" >&2\nexit 1\n', { mode: 0o755 });
    await assert.rejects(startDnoded({ bin }), /dnoded exited[\s\S]*config: no such key/);
});
