'use strict';
// harness: runs the real dnoded for a test: writes a config (and models
// file) into a temp dir, starts $DNODED_BIN on a free loopback port, waits
// until the port accepts, keeps its stderr in a file the test can read, and
// stops it. A crash, a sanitizer report, a hang on stop or processes left
// behind fail the test. It does not start Redis or MongoDB (services.js).

const assert = require('node:assert');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const {
    timeScale, sleep, freePort, tcpProbe, waitFor, spawnGroup, stopGroup, tail,
} = require('./proc');
const { DnodeClient } = require('./dnode_client');

// What ASan, LSan and UBSan print; any of it on stderr fails the test.
const SANITIZER_PATTERNS = [
    /ERROR: AddressSanitizer/,
    /ERROR: LeakSanitizer/,
    /AddressSanitizer:DEADLYSIGNAL/,
    /runtime error: /,
    /SUMMARY: UndefinedBehaviorSanitizer/,
];

// A models file small enough for tests that do not care about the schema.
const DEFAULT_MODELS = {
    todo: {
        collection: 'todos',
        fields: {
            title: { type: 'String', required: true, maxlength: 200 },
            done: { type: 'Boolean', default: false },
            order: { type: 'Number', min: 0 },
        },
    },
};

function dnodedBin() {
    const bin = process.env.DNODED_BIN;
    if (!bin) {
        const fromTree = path.resolve(__dirname, '..', '..', 'dnoded');
        if (fs.existsSync(fromTree)) {
            return fromTree;
        }
        throw new Error('DNODED_BIN is not set (run the tests through make check, or set it ' +
            'to the built dnoded)');
    }
    return bin;
}

function srcdir() {
    return process.env.DNODED_SRCDIR || path.resolve(__dirname, '..', '..');
}

// Renders { key: value } as dnoded.conf lines; an array value repeats its
// key, null/undefined leaves the key out.
function renderConfig(config) {
    const lines = ['# written by tests/lib/harness.js'];
    for (const [key, value] of Object.entries(config)) {
        if (value === null || value === undefined) {
            continue;
        }
        for (const v of Array.isArray(value) ? value : [value]) {
            lines.push(`${key} = ${v}`);
        }
    }
    return lines.join('\n') + '\n';
}

function sanitizerReport(text) {
    const lines = text.split('\n');
    const i = lines.findIndex((l) => SANITIZER_PATTERNS.some((re) => re.test(l)));
    return i < 0 ? null : lines.slice(Math.max(0, i - 2), i + 30).join('\n');
}

class Dnoded {
    constructor(opts) {
        this.opts = opts;
        this.bin = opts.bin || dnodedBin();
        this.dir = opts.dir || fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-test-'));
        this.ownsDir = !opts.dir;
        this.host = '127.0.0.1';
        this.port = null;
        this.configPath = path.join(this.dir, 'dnoded.conf');
        this.stderrPath = path.join(this.dir, 'dnoded.stderr');
        this.pidfile = path.join(this.dir, 'dnoded.pid');
        this.proc = null;
        this.unexpectedExit = null;
        if (opts.modelsPath) {
            this.modelsPath = opts.modelsPath;
        } else {
            this.modelsPath = path.join(this.dir, 'models.json');
            fs.writeFileSync(this.modelsPath, JSON.stringify(opts.models || DEFAULT_MODELS,
                null, 2) + '\n');
        }
    }

    get address() {
        return `${this.host}:${this.port}`;
    }

    get url() {
        return `http://${this.host}:${this.port}/`;
    }

    get pid() {
        return this.proc ? this.proc.pid : null;
    }

    get running() {
        return this.proc !== null && this.proc.exitStatus === null;
    }

    writeConfig() {
        const browser = path.join(srcdir(), 'browser');
        const config = {
            listen: this.address,
            workers: 1,
            models: this.modelsPath,
            mongodb_uri: this.opts.mongodbUri,
            redis_url: this.opts.redisUrl,
            docroot: fs.existsSync(browser) ? browser : undefined,
            pidfile: this.pidfile,
            log_level: 'info',
            shutdown_timeout: 10,
            ...this.opts.config,
        };
        fs.writeFileSync(this.configPath, renderConfig(config));
    }

    // Starts dnoded and resolves once its port accepts connections. Rejects
    // (with the stderr tail) if it exits first or the port stays closed.
    async start() {
        assert.ok(!this.running, 'dnoded is already running');
        const attempts = this.opts.port ? 1 : 3;
        for (let attempt = 1; ; attempt++) {
            if (!this.opts.port || this.port === null) {
                this.port = this.opts.port || await freePort();
            }
            this.writeConfig();
            try {
                await this.spawnAndWait();
                return this;
            } catch (err) {
                // Another test may have taken the free port in between.
                const text = this.stderr();
                if (attempt < attempts && /address already in use|EADDRINUSE/i.test(text)) {
                    this.port = null;
                    continue;
                }
                throw err;
            }
        }
    }

    async spawnAndWait() {
        const args = ['-c', this.configPath, ...(this.opts.args || [])];
        const env = { ...process.env, ...(this.opts.env || {}) };
        this.unexpectedExit = null;
        this.stopping = false;
        this.proc = await spawnGroup(this.bin, args, { logPath: this.stderrPath, env });
        const proc = this.proc;
        proc.exited.then((status) => {
            if (!this.stopping) {
                this.unexpectedExit = status;
            }
        });
        try {
            await waitFor(() => tcpProbe(this.port, this.host, 1000), {
                timeoutMs: (this.opts.startTimeoutMs || 15000) * timeScale,
                intervalMs: 50,
                what: `dnoded to accept on ${this.address}`,
                abort: () => proc.exitStatus && `dnoded exited (${JSON.stringify(proc.exitStatus)})`,
            });
        } catch (err) {
            this.stopping = true;
            await stopGroup(proc, { timeoutMs: 2000 });
            err.message += `\n--- ${this.stderrPath} ---\n${tail(this.stderrPath, 40)}`;
            throw err;
        }
    }

    // Everything dnoded (master and workers) wrote to stdout/stderr so far.
    stderr() {
        try {
            return fs.readFileSync(this.stderrPath, 'utf8');
        } catch (err) {
            return '';
        }
    }

    // Resolves with the first stderr line matching re (polling), written
    // after `since` bytes (default 0: anywhere).
    async waitForLog(re, { timeoutMs = 10000 * timeScale, since = 0 } = {}) {
        return waitFor(() => {
            const text = this.stderr().slice(since);
            return text.split('\n').find((l) => re.test(l));
        }, { timeoutMs, intervalMs: 50, what: `a log line matching ${re}` });
    }

    // Sends a signal to the master (e.g. 'SIGHUP' to reload).
    signal(sig) {
        assert.ok(this.running, `cannot send ${sig}: dnoded is not running`);
        this.proc.signal(sig);
    }

    // Pids of the live processes of dnoded's process group (master, workers).
    processes() {
        return this.proc ? this.proc.members() : [];
    }

    // Pids of the worker processes (the master's children), sorted.
    workerPids() {
        const ppid = (p) => {
            try {
                return Number(fs.readFileSync(`/proc/${p}/stat`, 'utf8')
                    .replace(/^.*\) /, '').split(' ')[1]);
            } catch {
                return -1;
            }
        };
        return this.processes().filter((p) => p !== this.pid && ppid(p) === this.pid).sort();
    }

    // Waits until n workers run; resolves with their pids.
    async waitWorkers(n, timeoutMs = 15000 * timeScale) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
            const pids = this.workerPids();
            if (pids.length === n) {
                return pids;
            }
            assert.ok(Date.now() < deadline, `${n} workers within ${timeoutMs} ms`);
            await new Promise((r) => setTimeout(r, 50));
        }
    }

    // Runs fn while every worker but `only` is stopped (SIGSTOP), so that
    // `only` accepts whatever connects meanwhile instead of the kernel's pick.
    async withOnlyWorker(only, fn) {
        const others = this.workerPids().filter((p) => p !== only);
        for (const p of others) {
            process.kill(p, 'SIGSTOP');
        }
        try {
            return await fn();
        } finally {
            for (const p of others) {
                process.kill(p, 'SIGCONT');
            }
        }
    }

    // Stops dnoded with sig (SIGTERM: fast stop; SIGQUIT: graceful), SIGKILL
    // after timeoutMs. Resolves { code, signal, stderr }. Throws an
    // AssertionError when dnoded had exited by itself, exited with a status
    // other than expectCode (default 0) or on a signal, needed SIGKILL, left
    // processes behind, or printed a sanitizer report.
    async stop({ sig = 'SIGTERM', timeoutMs = 20000 * timeScale, expectCode = 0 } = {}) {
        assert.ok(this.proc, 'dnoded was not started');
        const proc = this.proc;
        const unexpected = this.unexpectedExit;
        this.stopping = true;
        const r = await stopGroup(proc, { sig, timeoutMs });
        this.proc = null;
        const stderr = this.stderr();
        const problems = [];
        if (unexpected) {
            problems.push(`dnoded exited before it was stopped (${JSON.stringify(unexpected)})`);
        }
        if (r.killed) {
            problems.push(`dnoded did not exit within ${timeoutMs} ms of ${sig}; killed`);
        } else if (r.signal) {
            problems.push(`dnoded died on ${r.signal}`);
        } else if (expectCode !== null && r.code !== expectCode) {
            problems.push(`dnoded exited with status ${r.code}, expected ${expectCode}`);
        }
        if (r.leftovers.length > 0) {
            problems.push(`processes left behind after the master exited: ${r.leftovers}`);
        }
        const report = sanitizerReport(stderr);
        if (report) {
            problems.push(`sanitizer report:\n${report}`);
        }
        if (problems.length > 0) {
            assert.fail(`${problems.join('\n')}\n--- ${this.stderrPath} (tail) ---\n` +
                `${stderr.split('\n').slice(-40).join('\n')}`);
        }
        return { code: r.code, signal: r.signal, stderr };
    }

    // Marks an exit the test caused on purpose (e.g. after signal('SIGQUIT'))
    // and resolves with its { code, signal } once it happened; stop() then
    // still checks the status, stderr and leftovers.
    async waitExit({ timeoutMs = 20000 * timeScale } = {}) {
        assert.ok(this.proc, 'dnoded was not started');
        this.stopping = true;
        const proc = this.proc;
        await waitFor(() => proc.exitStatus, { timeoutMs, what: 'dnoded to exit' });
        return proc.exitStatus;
    }

    // Kills dnoded's whole process group with SIGKILL (a crashed host) and
    // resolves once it is gone; close() then only removes the temp dir.
    async kill() {
        assert.ok(this.proc, 'dnoded was not started');
        const proc = this.proc;
        this.stopping = true;
        proc.killGroup('SIGKILL');
        await proc.exited;
        await stopGroup(proc, { timeoutMs: 5000 });
        this.proc = null;
    }

    // Stops dnoded if running (failures still throw) and removes the temp
    // dir, unless something failed (kept for a look; DNODED_TEST_KEEP=1
    // keeps it always).
    async close() {
        let clean = false;
        try {
            if (this.proc) {
                await this.stop();
            }
            clean = true;
        } finally {
            if (this.ownsDir && clean && !process.env.DNODED_TEST_KEEP) {
                fs.rmSync(this.dir, { recursive: true, force: true });
            }
        }
    }

    // A raw DNode TCP client connected to this dnoded.
    connect(opts = {}) {
        return DnodeClient.connect(this.port, { host: this.host, ...opts });
    }

    // A client exporting the methods the server pushes to (created,
    // updated, deleted, subscribed, unsubscribed, recovered), each call recorded in
    // c.received, plus methods (which may override them); methods exchanged
    // before it resolves, closed after test t.
    async pushClient(t, { methods = {}, timeoutMs } = {}) {
        const pushes = {};
        for (const name of ['created', 'updated', 'deleted', 'subscribed', 'unsubscribed',
            'recovered']) {
            pushes[name] = () => {};
        }
        const c = await this.connect({ methods: { ...pushes, ...methods },
            ...(timeoutMs ? { timeoutMs } : {}) });
        t.after(() => c.close());
        await c.ready;
        return c;
    }
}

// Starts dnoded. opts:
//   mongodbUri, redisUrl   servers to use (redisUrl omitted: single-host mode);
//                          or services: the object from services.getServices()
//   models | modelsPath    schema object written to models.json, or a path
//                          (default: a one-model "todo" schema)
//   config                 more keys or overrides ({key: value|[values]|null})
//   args, env              extra command-line arguments / environment
//   port                   fixed port (default: a free one, retried if taken)
//   bin                    program to run (default $DNODED_BIN)
//   startTimeoutMs         how long to wait for the port (default 15 s, scaled)
//   redisReady             resolve only once the bus says it is connected to Redis
// With a node:test context t, close() runs in t.after, so a crash or
// sanitizer report fails that test.
async function startDnoded(opts = {}, t = null) {
    const o = { ...opts };
    if (o.services) {
        o.mongodbUri = o.mongodbUri || o.services.mongodbUri;
        o.redisUrl = o.redisUrl || o.services.redisUrl;
    }
    const d = new Dnoded(o);
    if (t) {
        t.after(() => d.close());
    }
    try {
        await d.start();
    } catch (err) {
        if (!t && d.ownsDir && !process.env.DNODED_TEST_KEEP) {
            fs.rmSync(d.dir, { recursive: true, force: true });
        }
        throw err;
    }
    if (o.redisReady) {
        await d.waitForLog(/bus: connected to Redis/);
    }
    return d;
}

// Stops the dnoded servers given (together), then each service (a Redis,
// ...) in turn; unset entries are skipped.
async function stopAll(servers, services = []) {
    try {
        await Promise.all(servers.filter(Boolean).map((d) => d.close()));
    } finally {
        for (const s of services.filter(Boolean)) {
            await s.close();
        }
    }
}

// Runs dnoded to completion (e.g. ['-t', '-c', file]) and returns
// { code, signal, stdout, stderr, timedOut, sanitizer } (sanitizer: the
// report found on stderr, or null). Killed after timeoutMs.
function runDnoded(args, { timeoutMs = 20000 * timeScale, env, bin } = {}) {
    const r = spawnSync(bin || dnodedBin(), args, {
        encoding: 'utf8',
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        env: { ...process.env, ...(env || {}) },
    });
    if (r.error && r.error.code !== 'ETIMEDOUT') {
        throw r.error;
    }
    return {
        code: r.status,
        signal: r.signal,
        stdout: r.stdout,
        stderr: r.stderr,
        timedOut: Boolean(r.error),
        sanitizer: sanitizerReport(r.stderr || ''),
    };
}

module.exports = {
    Dnoded,
    DnodeClient,
    DEFAULT_MODELS,
    SANITIZER_PATTERNS,
    startDnoded,
    stopAll,
    runDnoded,
    renderConfig,
    sanitizerReport,
    timeScale,
    sleep,
};
