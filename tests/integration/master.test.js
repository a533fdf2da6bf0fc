'use strict';
// The process model of the real dnoded: the master's workers share its
// listening socket, a killed worker is replaced, reloads (good and broken)
// keep serving without refusing a connection or losing a callback, QUIT
// delivers what is in flight, USR1 reopens the log, and -t / -s behave as
// dnoded(8) says. Needs no database: pub/sub round trips run in
// single-host mode, and the one slow operation is a read against a
// MongoDB address nobody listens on (it completes with an error after
// db_timeout_ms, which is the callback QUIT must still deliver).

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const { startDnoded, runDnoded, renderConfig, sleep, timeScale } = require('../lib/harness');
const { waitFor, freePort } = require('../lib/proc');

// ------------------------------------------------------------------ helpers

function ppidOf(pid) {
    try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    } catch (err) {
        return null;
    }
}

// Live children of the master: its workers.
function workerPids(d) {
    return d.processes().filter((p) => p !== d.pid && ppidOf(p) === d.pid).sort();
}

async function waitWorkers(d, n, what = `${n} workers`) {
    return waitFor(() => {
        const pids = workerPids(d);
        return pids.length === n ? pids : null;
    }, { timeoutMs: 15000 * timeScale, what });
}

// Inodes of the TCP sockets a process holds open.
function socketInodes(pid) {
    const out = new Set();
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
        try {
            const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
            if (m) {
                out.add(m[1]);
            }
        } catch (err) {
            // closed meanwhile
        }
    }
    return out;
}

// Inode of the socket listening on 127.0.0.1:port (from /proc/net/tcp).
function listenerInode(port) {
    const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
    for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f.length > 9 && f[1] === `0100007F:${hexPort}` && f[3] === '0A') {
            return f[9];
        }
    }
    return null;
}

// Server-side ends of established connections to 127.0.0.1:port that one
// of pids holds open.
function heldBy(port, pids) {
    const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
    const inodes = fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)
        .map((line) => line.trim().split(/\s+/))
        .filter((f) => f.length > 9 && f[1] === `0100007F:${hexPort}` && f[3] === '01')
        .map((f) => f[9]);
    const open = new Set(pids.flatMap((pid) => [...socketInodes(pid)]));
    return inodes.filter((inode) => open.has(inode));
}

// The counters of GET /metrics (any worker sums every worker's slot).
function getMetrics(port) {
    return new Promise((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d) => {
                body += d;
            });
            res.on('end', () => {
                const m = {};
                for (const line of body.split('\n')) {
                    const f = /^([a-z_]+(?:\{[^}]*\})?) (\d+)$/.exec(line);
                    if (f) {
                        m[f[1]] = Number(f[2]);
                    }
                }
                resolve(m);
            });
        }).on('error', reject);
    });
}

// Clients that keep connecting and making subscribe round trips until
// stop() is called. A connection the server closes is replaced at once.
//   refused:     connection attempts that failed;
//   raced:       requests written while the server was already closing the
//                connection (its FIN not yet seen): no callback, and no way
//                for the server to answer; at most one per server close;
//   ok:          callbacks received (each with null, as subscribe answers);
//   connections: connections opened, each of which sent one methods message.
// With slowReads, that many more clients loop on a read that stays in
// flight until the database times out (mongodbUri pointing nowhere): its
// error callback counts as the answer.
function startLoad(d, nClients, { slowReads = 0 } = {}) {
    const stats = { ok: 0, sent: 0, raced: 0, refused: 0, connections: 0, closedByServer: 0,
        slowOps: 0, errors: [] };
    let stopping = false;
    const perClient = new Array(nClients + slowReads).fill(0);
    async function client(i) {
        while (!stopping) {
            let c;
            try {
                c = await d.connect({ timeoutMs: 20000 * timeScale });
            } catch (err) {
                stats.refused++;
                stats.errors.push(`connect: ${err.message}`);
                await sleep(20);
                continue;
            }
            stats.connections++;
            try {
                await c.ready;
            } catch (err) {
                // Closed before the server said hello: nothing was asked.
                stats.closedByServer++;
                c.close();
                continue;
            }
            while (!stopping && !c.isClosed) {
                const cb = c.callback(20000 * timeScale, 'the subscribe reply');
                let answer = cb.args;
                if (i < nClients) {
                    c.call('subscribe', `/load/${i}`, cb.fn);
                } else {
                    const errCb = c.callback(20000 * timeScale, 'the read error');
                    c.call('read', { type: 'todo', query: {}, error: errCb.fn }, cb.fn);
                    answer = Promise.race([cb.args.then(() => ['read answered']),
                        errCb.args.then(([e]) => (e && /^(Unavailable|DatabaseError)$/
                            .test(e.name) ? [null] : [e]))]);
                    stats.slowOps++;
                }
                stats.sent++;
                try {
                    const [err] = await answer;
                    if (err !== null) {
                        stats.errors.push(`answered ${JSON.stringify(err)}`);
                    }
                    stats.ok++;
                    perClient[i]++;
                } catch (err) {
                    if (!c.isClosed) {
                        stats.errors.push(err.message);
                    }
                    stats.raced++;
                }
                // Let a close that arrived with the reply be seen first.
                await new Promise((resolve) => setImmediate(resolve));
            }
            if (c.isClosed && !stopping) {
                stats.closedByServer++;
            }
            c.close();
        }
    }
    const clients = [];
    for (let i = 0; i < nClients + slowReads; i++) {
        clients.push(client(i));
    }
    return {
        stats,
        perClient,
        async stop() {
            stopping = true;
            await Promise.all(clients);
            return stats;
        },
    };
}

// Waits until every client completed at least `more` round trips past now
// (the first `only` clients, when given).
async function progress(load, more, what, only = load.perClient.length) {
    const start = load.perClient.slice();
    await waitFor(() => load.perClient.every((n, i) => i >= only || n >= start[i] + more),
        { timeoutMs: 20000 * timeScale, what });
}

function writeFile(file, text) {
    fs.writeFileSync(file, text);
}

// A fresh client gets a subscribe round trip answered.
async function assertServes(d, url) {
    const c = await d.connect();
    try {
        assert.deepStrictEqual(await c.invoke('subscribe', url), [null]);
    } finally {
        c.close();
    }
}

// ------------------------------------------------------------------ tests

test('workers = 3 gives three worker processes sharing one listening socket', async (t) => {
    const d = await startDnoded({ config: { workers: 3 } }, t);
    const pids = await waitWorkers(d, 3);
    assert.strictEqual(new Set(pids).size, 3);
    const inode = listenerInode(d.port);
    assert.ok(inode, 'the listening socket shows in /proc/net/tcp');
    assert.ok(socketInodes(d.pid).has(inode), 'the master holds the listening socket');
    for (const pid of pids) {
        assert.ok(socketInodes(pid).has(inode), `worker ${pid} accepts on the same socket`);
    }
    // Its accept queue is the master's (4096, or the kernel's somaxconn if
    // lower): a worker must not shrink it, or connection storms drop SYNs.
    const { spawnSync } = require('node:child_process');
    const ss = spawnSync('ss', ['-Hltn', `( sport = :${d.port} )`], { encoding: 'utf8' });
    assert.strictEqual(ss.status, 0, `ss (iproute2, scripts/setup): ${ss.stderr}`);
    const somaxconn = Number(fs.readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
    assert.strictEqual(Number(ss.stdout.trim().split(/\s+/)[2]), Math.min(4096, somaxconn),
        `listen queue: ${ss.stdout}`);
    // Every connection is served, whichever worker the kernel gives it to.
    const clients = [];
    for (let i = 0; i < 12; i++) {
        clients.push(await d.connect());
    }
    for (const c of clients) {
        assert.deepStrictEqual(await c.invoke('subscribe', '/three'), [null]);
    }
    for (const c of clients) {
        c.close();
    }
});

test('workers = auto runs one worker per online CPU', async (t) => {
    const d = await startDnoded({ config: { workers: 'auto' } }, t);
    const { spawnSync } = require('node:child_process');
    const online = Number(spawnSync('getconf', ['_NPROCESSORS_ONLN'], { encoding: 'utf8' })
        .stdout);
    assert.ok(online >= 1);
    await waitWorkers(d, online, `${online} workers`);
});

// Established connections to port that pid holds (server side).
function connectionsOf(pid, port) {
    const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
    const mine = socketInodes(pid);
    let n = 0;
    for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f.length > 9 && f[1] === `0100007F:${hexPort}` && f[3] === '01' && mine.has(f[9])) {
            n++;
        }
    }
    return n;
}

test('connections opened at once are spread evenly over the workers', async (t) => {
    const net = require('node:net');
    const d = await startDnoded({ config: { workers: 2 } }, t);
    const pids = await waitWorkers(d, 2);
    const n = 600;
    const socks = [];
    t.after(() => socks.forEach((s) => s.destroy()));
    // All at once, as a page reload storm or a fan-out benchmark does; the
    // connections stay silent (the server waits for a client's first bytes).
    await Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
        const s = net.connect(d.port, '127.0.0.1', resolve);
        s.on('error', reject);
        socks.push(s);
    })));
    const held = await waitFor(() => {
        const now = pids.map((p) => connectionsOf(p, d.port));
        return now[0] + now[1] === n ? now : null;
    }, { timeoutMs: 15000 * timeScale, what: `${n} connections accepted` });
    t.diagnostic(`split: ${held.join('/')}`);
    // A worker over its share (plus 1/32 and 8) pauses accepting; the
    // counts are read while accepts are still landing, hence the slack.
    for (const h of held) {
        assert.ok(Math.abs(h - n / 2) <= n / 20, `split ${held.join('/')} is not even`);
    }
});

function statusIds(pid, field) {
    const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')
        .find((l) => l.startsWith(`${field}:`));
    return line.split(/\s+/).slice(1).filter(Boolean).map(Number);
}

const asRoot = process.getuid && process.getuid() === 0 &&
    require('node:child_process').spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' })
        .status === 0;

test('started as root with user = nobody, the workers drop to it and its group after fork',
    { skip: asRoot ? false : 'needs root and a user nobody' }, async (t) => {
        const { spawnSync } = require('node:child_process');
        const uid = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout);
        const gid = Number(spawnSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).stdout);
        const d = await startDnoded({ config: { workers: 2, user: 'nobody' } }, t);
        const pids = await waitWorkers(d, 2);
        assert.deepStrictEqual(statusIds(d.pid, 'Uid'), [0, 0, 0, 0], 'the master stays root');
        for (const pid of pids) {
            assert.deepStrictEqual(statusIds(pid, 'Uid'), [uid, uid, uid, uid]);
            assert.deepStrictEqual(statusIds(pid, 'Gid'), [gid, gid, gid, gid]);
            assert.ok(!statusIds(pid, 'Groups').includes(0), 'no supplementary root group');
        }
        await assertServes(d, '/nobody');
    });

test('a worker killed with SIGKILL under load is replaced and clients reconnect at once',
    async (t) => {
        const d = await startDnoded({ config: { workers: 2 } }, t);
        const before = await waitWorkers(d, 2);
        const load = startLoad(d, 4);
        try {
            await progress(load, 20, 'round trips before the kill');
            // The kernel may have given every client to one worker: kill
            // the one holding the most sockets.
            const busy = before.slice().sort((a, b) => socketInodes(b).size -
                socketInodes(a).size);
            const victim = busy[0];
            const survivor = busy[1];
            process.kill(victim, 'SIGKILL');
            await d.waitForLog(/worker \d+ \(pid \d+\) was killed by signal 9 unexpectedly: respawning/);
            const after = await waitFor(() => {
                const pids = workerPids(d);
                return pids.length === 2 && !pids.includes(victim) ? pids : null;
            }, { timeoutMs: 15000 * timeScale, what: 'a replacement worker' });
            assert.ok(after.includes(survivor), 'the other worker kept running');
            await progress(load, 20, 'round trips after the kill');
        } finally {
            await load.stop();
        }
        assert.strictEqual(load.stats.refused, 0, load.stats.errors.join('\n'));
        assert.ok(load.stats.closedByServer >= 1, 'some clients were on the killed worker');
    });

test('a worker that keeps dying is respawned with a growing delay', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t);
    let [pid] = await waitWorkers(d, 1);
    const delays = [];
    for (let i = 0; i < 3; i++) {
        const since = d.stderr().length;
        process.kill(pid, 'SIGKILL');
        await d.waitForLog(/killed by signal 9 unexpectedly: respawning/, { since });
        const old = pid;
        [pid] = await waitFor(() => {
            const p = workerPids(d);
            return p.length === 1 && p[0] !== old ? p : null;
        }, { timeoutMs: 15000 * timeScale, what: 'the respawned worker' });
        const m = /will be respawned in ([\d.]+) s/.exec(d.stderr().slice(since));
        delays.push(m ? Number(m[1]) : 0);
    }
    // At once after the first crash, then 0.1 s, then 0.2 s (it never lived 10 s).
    assert.deepStrictEqual(delays, [0, 0.1, 0.2]);
    await assertServes(d, '/backoff');
});

test('10 reloads while clients keep calling: nothing refused, nothing closed, all answered',
    async (t) => {
        const deadPort = await freePort();
        const d = await startDnoded({
            mongodbUri: `mongodb://127.0.0.1:${deadPort}/dnoded_master_test`,
            config: { workers: 2, shutdown_timeout: 20, db_timeout_ms: 400 },
        }, t);
        let pids = await waitWorkers(d, 2);
        let held = [];
        const load = startLoad(d, 3, { slowReads: 2 });
        try {
            await progress(load, 10, 'round trips before the first reload');
            for (let gen = 2; gen <= 11; gen++) {
                d.signal('SIGHUP');
                await d.waitForLog(new RegExp(`reloaded: generation ${gen} started`));
                // The old generation finishes (it drains its sessions) and the
                // new one serves every client.
                const old = pids;
                pids = await waitFor(() => {
                    const now = workerPids(d);
                    return now.length === 2 && now.every((p) => !old.includes(p)) ? now : null;
                }, { timeoutMs: 25000 * timeScale, what: `generation ${gen - 1} to exit` });
                await progress(load, 3, `round trips on generation ${gen}`, 3);
            }
            held = heldBy(d.port, pids);
        } finally {
            await load.stop();
        }
        const s = load.stats;
        assert.strictEqual(s.refused, 0, `refused connections:\n${s.errors.join('\n')}`);
        assert.deepStrictEqual(s.errors, []);
        // Every request the server read was answered: what the workers (all
        // generations) received, less one methods message per connection,
        // is exactly the callbacks the clients got.
        const m = await getMetrics(d.port);
        const read = m.dnoded_messages_received_total - s.connections;
        assert.strictEqual(read, s.ok, `the server read ${read} requests, ${s.ok} were ` +
            `answered (${s.raced} more were written as their connection closed)`);
        assert.strictEqual(m.dnoded_connections_refused_total, 0);
        assert.ok(s.slowOps >= 10, `slow reads made: ${s.slowOps}`);
        t.diagnostic(`round trips ${s.ok}, connections ${s.connections}, closed by reloads ` +
            `${s.closedByServer}, raced ${s.raced}, slow reads ${s.slowOps}`);
        // Reloads hand sessions to the new generation instead of closing
        // them: no request is lost to a close, no client had to reconnect,
        // and every generation served the same connections (the old ones
        // exited while those stayed open).
        assert.strictEqual(s.raced, 0, 'requests lost to a server close');
        assert.strictEqual(s.closedByServer, 0, 'sessions closed by reloads');
        assert.strictEqual(s.connections, 5, 'one connection per client for the whole test');
        assert.strictEqual(held.length, 5, `the last generation holds the clients' ` +
            `connections (${held.length} of 5)`);
    });

test('a reload with a broken models file keeps the running state and says why', async (t) => {
    const d = await startDnoded({ config: { workers: 2 } }, t);
    const pids = await waitWorkers(d, 2);
    const good = fs.readFileSync(d.modelsPath, 'utf8');
    writeFile(d.modelsPath, '{"todo": {"fields": {"title": {"type": "Strin');
    const since = d.stderr().length;
    d.signal('SIGHUP');
    const line = await d.waitForLog(/reload failed, still running the previous configuration/,
        { since });
    assert.match(line, /models\.json/);
    // Same workers, still serving.
    await sleep(300);
    assert.deepStrictEqual(workerPids(d), pids);
    await assertServes(d, '/still');
    // Fixed, the next reload goes through.
    writeFile(d.modelsPath, good);
    d.signal('SIGHUP');
    await d.waitForLog(/reloaded: generation 2 started/, { since });
    // A config error is refused the same way.
    const conf = fs.readFileSync(d.configPath, 'utf8');
    writeFile(d.configPath, conf + 'no_such_key = 1\n');
    const since2 = d.stderr().length;
    d.signal('SIGHUP');
    const line2 = await d.waitForLog(/reload failed/, { since: since2 });
    assert.match(line2, /no_such_key/);
    writeFile(d.configPath, conf);
});

test('a reload whose new workers cannot start keeps the running generation', async (t) => {
    const d = await startDnoded({ config: { workers: 2 } }, t);
    const pids = await waitWorkers(d, 2);
    // The config accepts any mongodb:// URI; the driver in each new worker
    // refuses this one, and such a worker exits with status 2.
    const conf = fs.readFileSync(d.configPath, 'utf8');
    writeFile(d.configPath, conf.replace(/^mongodb_uri = .*$/m, '') +
        'mongodb_uri = mongodb://127.0.0.1:notaport/x\n');
    const since = d.stderr().length;
    d.signal('SIGHUP');
    const line = await d.waitForLog(/reload failed, still running the previous configuration: new worker \d exited with status 2/, { since });
    assert.ok(line);
    await waitWorkers(d, 2, 'the failed generation to exit');
    assert.deepStrictEqual(workerPids(d), pids, 'the running workers were never stopped');
    await assertServes(d, '/after-failed-reload');
    // Back to a good file, the next reload goes through.
    writeFile(d.configPath, conf);
    d.signal('SIGHUP');
    await d.waitForLog(/reloaded: generation 2 started/, { since });
});

test('when every worker exits with status 2 the master exits 1 and says why', async (t) => {
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-fatal-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const models = path.join(dir, 'models.json');
    writeFile(models, JSON.stringify({ todo: { fields: { title: 'String' } } }));
    const conf = path.join(dir, 'dnoded.conf');
    writeFile(conf, renderConfig({
        listen: `127.0.0.1:${await freePort()}`, workers: 2, models,
        mongodb_uri: 'mongodb://127.0.0.1:notaport/x', pidfile: path.join(dir, 'pid'),
    }));
    const r = runDnoded(['-c', conf]);
    assert.strictEqual(r.code, 1, r.stderr);
    assert.strictEqual(r.sanitizer, null);
    assert.match(r.stderr, /worker 0 \(pid \d+\) exited with status 2, a fatal configuration/);
    assert.match(r.stderr, /every worker exited with status 2 \(fatal configuration error\)/);
    assert.match(r.stderr, /bad mongodb_uri/);
    assert.ok(!fs.existsSync(path.join(dir, 'pid')), 'the pidfile is removed');
});

test('a reload that changes workers says a restart is needed', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t);
    await waitWorkers(d, 1);
    writeFile(d.configPath, fs.readFileSync(d.configPath, 'utf8').replace(/^workers = 1$/m,
        'workers = 2'));
    d.signal('SIGHUP');
    await d.waitForLog(/reload: workers changed; restart dnoded to apply/);
    await d.waitForLog(/reloaded: generation 2 started/);
    await sleep(300);
    assert.strictEqual(workerPids(d).length, 1);
});

test('QUIT delivers the callbacks of operations in flight before closing', async (t) => {
    const deadPort = await freePort();
    const d = await startDnoded({
        mongodbUri: `mongodb://127.0.0.1:${deadPort}/dnoded_master_test`,
        config: { workers: 1, db_timeout_ms: 1500 },
    }, t);
    await waitWorkers(d, 1);
    const c = await d.connect();
    await c.ready;
    // A read that stays in flight until server selection gives up.
    const readFn = c.callback(20000 * timeScale, 'the read reply');
    const readErr = c.callback(20000 * timeScale, 'the read error');
    c.call('read', { type: 'todo', query: {}, error: readErr.fn }, readFn.fn);
    // And a burst of round trips written in one go, read by the server
    // while it is already stopping.
    const burst = [];
    let lines = '';
    for (let i = 0; i < 50; i++) {
        const cb = c.callback(20000 * timeScale, `subscribe reply ${i}`);
        burst.push(cb.args);
        lines += JSON.stringify(c.request(c.remoteMethods.subscribe, [`/quit/${i}`, cb.fn])) +
            '\n';
    }
    await sleep(200); // let the read reach the worker first (ordering, not a timing check)
    c.sendRaw(lines);
    d.signal('SIGQUIT');
    // Expect the exit from now on: it may come before the close is seen here.
    const exited = d.waitExit();
    const replies = await Promise.all(burst);
    assert.ok(replies.every((r) => r[0] === null));
    const first = await Promise.race([readFn.args.then((a) => ['fn', a]),
        readErr.args.then((a) => ['error', a])]);
    assert.strictEqual(first[0], 'error', `read answered ${JSON.stringify(first)}`);
    assert.match(first[1][0].name, /^(Unavailable|DatabaseError)$/);
    await c.waitClosed();
    const status = await exited;
    assert.deepStrictEqual(status, { code: 0, signal: null });
    assert.ok(!fs.existsSync(d.pidfile), 'the pidfile is removed on exit');
});

test('USR1 after moving the log file writes to a new file', async (t) => {
    const d = await startDnoded({ config: { workers: 2 } }, t);
    const log = path.join(d.dir, 'dnoded.log');
    // Restart on a log file (the harness logs to stderr by default).
    await d.stop();
    d.opts.config = { ...d.opts.config, log_file: log };
    await d.start();
    await waitWorkers(d, 2);
    await waitFor(() => /\[worker 1\].*serving/.test(fs.readFileSync(log, 'utf8')),
        { what: 'the workers to log' });
    fs.renameSync(log, log + '.1');
    d.signal('SIGUSR1');
    await waitFor(() => fs.existsSync(log), { what: 'a new log file' });
    // Every process writes to the new file from now on: a session closed
    // by a worker logs there.
    for (let i = 0; i < 4; i++) {
        const c = await d.connect();
        await c.invoke('subscribe', '/log');
        c.close();
    }
    const text = await waitFor(() => {
        const s = fs.readFileSync(log, 'utf8');
        return /\[master\] info: reopened the log file/.test(s) && /\[worker \d\].*closed/.test(s)
            ? s : null;
    }, { what: 'master and worker lines in the new file' });
    assert.doesNotMatch(fs.readFileSync(log + '.1', 'utf8'), /reopened/);
    assert.match(text, /\[worker \d\]/);
});

test('-t exits 0 for a good configuration and 1 with the reason otherwise', async (t) => {
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-t-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const models = path.join(dir, 'models.json');
    writeFile(models, JSON.stringify({ todo: { fields: { title: 'String' } } }));
    const good = path.join(dir, 'good.conf');
    writeFile(good, renderConfig({ listen: '127.0.0.1:1', models }));
    let r = runDnoded(['-t', '-c', good]);
    assert.strictEqual(r.code, 0, r.stderr);
    assert.match(r.stdout, /are ok/);

    const badKey = path.join(dir, 'bad.conf');
    writeFile(badKey, renderConfig({ models, wrokers: 2 }));
    r = runDnoded(['-t', '-c', badKey]);
    assert.strictEqual(r.code, 1);
    assert.match(r.stderr, /bad\.conf:\d+: .*wrokers/);

    const badModels = path.join(dir, 'badmodels.json');
    writeFile(badModels, JSON.stringify({ todo: { fields: { title: { type: 'Strnig' } } } }));
    const conf2 = path.join(dir, 'm.conf');
    writeFile(conf2, renderConfig({ models: badModels }));
    r = runDnoded(['-t', '-c', conf2]);
    assert.strictEqual(r.code, 1);
    assert.match(r.stderr, /badmodels\.json: .*Strnig/);

    const badUser = path.join(dir, 'u.conf');
    writeFile(badUser, renderConfig({ models, user: 'no-such-user-dnoded' }));
    r = runDnoded(['-t', '-c', badUser]);
    assert.strictEqual(r.code, 1);
    assert.match(r.stderr, /user 'no-such-user-dnoded' does not exist/);
    assert.doesNotMatch(r.stdout, /are ok/, 'a failed check never says ok');

    r = runDnoded(['-t', '-c', path.join(dir, 'missing.conf')]);
    assert.strictEqual(r.code, 1);
    assert.match(r.stderr, /missing\.conf/);
});

test('-s reload, reopen, quit and stop reach the master through the pidfile', async (t) => {
    const d = await startDnoded({ config: { workers: 1 } }, t);
    await waitWorkers(d, 1);
    assert.strictEqual(fs.readFileSync(d.pidfile, 'utf8'), `${d.pid}\n`);
    const ctl = (name) => runDnoded(['-c', d.configPath, '-s', name]);

    let r = ctl('reload');
    assert.strictEqual(r.code, 0, r.stderr);
    await d.waitForLog(/reloaded: generation 2 started/);
    r = ctl('reopen');
    assert.strictEqual(r.code, 0, r.stderr);
    await d.waitForLog(/reopened the log file/);
    r = ctl('restart');
    assert.strictEqual(r.code, 1);
    assert.match(r.stderr, /unknown signal 'restart'/);
    r = ctl('quit');
    assert.strictEqual(r.code, 0, r.stderr);
    await d.waitForLog(/graceful stop/);
    assert.deepStrictEqual(await d.waitExit(), { code: 0, signal: null });
    assert.ok(!fs.existsSync(d.pidfile));
    r = ctl('reload');
    assert.strictEqual(r.code, 1);
    assert.match(r.stderr, /cannot open pidfile/);
    await d.stop();

    await d.start();
    await waitWorkers(d, 1);
    r = ctl('stop');
    assert.strictEqual(r.code, 0, r.stderr);
    await d.waitForLog(/fast stop/);
    assert.deepStrictEqual(await d.waitExit(), { code: 0, signal: null });

    // A pidfile naming no process.
    writeFile(d.pidfile, '999999999\n');
    r = ctl('reload');
    assert.strictEqual(r.code, 1);
    assert.match(r.stderr, /cannot signal process 999999999/);
    fs.rmSync(d.pidfile);
});

test('a second TERM stops at once, killing workers still busy', async (t) => {
    const deadPort = await freePort();
    const d = await startDnoded({
        mongodbUri: `mongodb://127.0.0.1:${deadPort}/dnoded_master_test`,
        config: { workers: 1, db_timeout_ms: 10000 },
    }, t);
    await waitWorkers(d, 1);
    const c = await d.connect();
    await c.ready;
    const errCb = c.callback(20000 * timeScale, 'the read error');
    c.call('read', { type: 'todo', query: {}, error: errCb.fn }, () => {});
    await sleep(200); // the read reaches the worker (ordering, not a timing check)
    d.signal('SIGTERM');
    await d.waitForLog(/\[master\] info: fast stop: 1 workers/);
    await d.waitForLog(/\[worker 0\] info: fast stop: 1 sessions/);
    d.signal('SIGTERM');
    assert.deepStrictEqual(await d.waitExit(), { code: 0, signal: null });
    assert.match(d.stderr(), /killing 1 workers/);
    c.close();
});

// sd_notify: a datagram socket standing in for systemd's (python3 reads it;
// node has no AF_UNIX datagrams). Skipped without python3 or libsystemd.
const NOTIFY_RECEIVER = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print('bound', flush=True)
while True:
    print(s.recv(4096).decode().replace('\\n', ' '), flush=True)
`;

function notifySkip() {
    const { spawnSync } = require('node:child_process');
    if (spawnSync('python3', ['-c', 'pass']).status !== 0) {
        return 'needs python3';
    }
    const bin = process.env.DNODED_BIN || '';
    const ldd = spawnSync('ldd', [bin], { encoding: 'utf8' });
    return /libsystemd/.test(ldd.stdout || '') ? false : 'dnoded built without libsystemd';
}

test('systemd: READY, RELOADING with MONOTONIC_USEC then READY, STOPPING', { skip: notifySkip() },
    async (t) => {
        const { spawn } = require('node:child_process');
        const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-notify-'));
        const sock = path.join(dir, 'notify.sock');
        const rx = spawn('python3', ['-c', NOTIFY_RECEIVER, sock], { stdio: ['ignore', 'pipe',
            'inherit'] });
        t.after(() => {
            rx.kill('SIGKILL');
            fs.rmSync(dir, { recursive: true, force: true });
        });
        const lines = [];
        rx.stdout.setEncoding('utf8');
        rx.stdout.on('data', (d) => lines.push(...d.split('\n').filter(Boolean)));
        await waitFor(() => lines.includes('bound'), { what: 'the notify socket' });
        const d = await startDnoded({ config: { workers: 2 }, env: { NOTIFY_SOCKET: sock } }, t);
        await waitFor(() => lines.includes('READY=1'), { what: 'READY=1' });
        await waitWorkers(d, 2);
        d.signal('SIGHUP');
        await d.waitForLog(/reloaded: generation 2/);
        await waitFor(() => lines.length >= 4, { what: 'RELOADING and READY' });
        assert.match(lines[2], /^RELOADING=1 MONOTONIC_USEC=\d+$/);
        assert.strictEqual(lines[3], 'READY=1');
        d.signal('SIGQUIT');
        await waitFor(() => lines.includes('STOPPING=1'), { what: 'STOPPING=1' });
        assert.deepStrictEqual(await d.waitExit(), { code: 0, signal: null });
        assert.deepStrictEqual(lines.slice(0, 2), ['bound', 'READY=1']);
    });
