'use strict';
// services: the Redis and MongoDB-compatible (FerretDB on SQLite) servers the
// tests need, on free loopback ports in temporary directories. getServices()
// uses DNODED_TEST_MONGODB_URI / DNODED_TEST_REDIS_URL when set and starts
// nothing then; startRedis() / startFerretDB() always start a private server
// a test may stop and start again. Run as a program it starts both and
// prints their addresses as shell exports (scripts/test and scripts/run).

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { MongoConnection, withDatabase } = require('./mongo');
const { RedisConnection } = require('./redis');
const {
    timeScale, freePort, waitFor, spawnGroup, stopGroup, findProgram, tail,
} = require('./proc');

// A server process bound to fixed ports and a directory, so that stop() and
// start() bring the same server (and its data) back.
class ServerProcess {
    constructor({ name, program, args, dir, ownsDir, ping }) {
        this.name = name;
        this.program = program;
        this.args = args;
        this.dir = dir;
        this.ownsDir = ownsDir;
        this.ping = ping;
        this.logPath = path.join(dir, `${name}.log`);
        this.proc = null;
    }

    get running() {
        return this.proc !== null && this.proc.exitStatus === null;
    }

    // Starts the server and resolves once it answers ping(). Rejects, with
    // the tail of its log, if it exits or does not answer in time.
    async start({ timeoutMs = 30000 } = {}) {
        if (this.running) {
            return;
        }
        this.proc = await spawnGroup(this.program, this.args, { logPath: this.logPath });
        const proc = this.proc;
        try {
            await waitFor(() => this.ping(), {
                timeoutMs,
                intervalMs: 100,
                what: `${this.name} to answer`,
                abort: () => proc.exitStatus && `it exited (${JSON.stringify(proc.exitStatus)})`,
            });
        } catch (err) {
            await stopGroup(proc, { timeoutMs: 2000 });
            err.message += `\n--- ${this.logPath} ---\n${tail(this.logPath)}`;
            throw err;
        }
    }

    // Stops the server with sig (SIGKILL after timeoutMs); data stays.
    // FerretDB waits a few seconds for open clients on SIGTERM; a test that
    // wants the server gone at once passes sig: 'SIGKILL'.
    async stop({ sig = 'SIGTERM', timeoutMs = 10000 } = {}) {
        if (this.proc) {
            const proc = this.proc;
            this.proc = null;
            await stopGroup(proc, { sig, timeoutMs });
        }
    }

    // Stops the server and removes its directory if this object created it.
    async close() {
        await this.stop();
        if (this.ownsDir) {
            fs.rmSync(this.dir, { recursive: true, force: true });
        }
    }
}

function makeDir(dir, prefix) {
    if (dir) {
        fs.mkdirSync(dir, { recursive: true });
        return { dir: path.resolve(dir), ownsDir: false };
    }
    return { dir: fs.mkdtempSync(path.join(os.tmpdir(), prefix)), ownsDir: true };
}

async function pingRedis(url) {
    const conn = await RedisConnection.connect(url, { timeoutMs: 2000 });
    try {
        return (await conn.command('PING')) === 'PONG';
    } finally {
        conn.close();
    }
}

async function pingMongo(uri) {
    const conn = await MongoConnection.connect(uri, { timeoutMs: 2000 });
    try {
        return await conn.ping();
    } finally {
        conn.close();
    }
}

// Starts a private redis-server (no persistence) on a free port, with more
// arguments (requirepass, user...) when given, and credentials for the URL
// (auth: "user:password" or ":password"). The result has .port, .url
// (redis://[auth@]127.0.0.1:PORT), stop(), start(), close().
async function startRedis({ dir, args = [], auth = null } = {}) {
    const program = findProgram('redis-server', 'DNODED_TEST_REDIS_SERVER');
    if (!program) {
        throw new Error('redis-server not found (run scripts/setup)');
    }
    const d = makeDir(dir, 'dnoded-redis-');
    const port = await freePort();
    const url = `redis://${auth ? `${auth}@` : ''}127.0.0.1:${port}`;
    const server = new ServerProcess({
        name: 'redis',
        program,
        args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
            '--appendonly', 'no', '--dir', d.dir, '--daemonize', 'no', ...args],
        dir: d.dir,
        ownsDir: d.ownsDir,
        ping: () => pingRedis(url),
    });
    server.port = port;
    server.url = url;
    try {
        await server.start();
    } catch (err) {
        await server.close();
        throw err;
    }
    return server;
}

// Starts a private FerretDB (SQLite files under its directory) on a free
// port. The result has .port, .uri (mongodb://127.0.0.1:PORT), stop(),
// start() (same data), close(). tls: { cert, key } also listens for TLS on
// .tlsPort with that certificate.
async function startFerretDB({ dir, tls = null } = {}) {
    const program = findProgram('ferretdb', 'DNODED_TEST_FERRETDB');
    if (!program) {
        throw new Error('ferretdb not found (run scripts/setup)');
    }
    const d = makeDir(dir, 'dnoded-ferretdb-');
    const dataDir = path.join(d.dir, 'data');
    fs.mkdirSync(dataDir, { recursive: true });
    const port = await freePort();
    const debugPort = await freePort();
    const uri = `mongodb://127.0.0.1:${port}`;
    const tlsPort = tls ? await freePort() : null;
    const tlsArgs = tls ? [`--listen-tls=127.0.0.1:${tlsPort}`,
        `--listen-tls-cert-file=${tls.cert}`, `--listen-tls-key-file=${tls.key}`] : [];
    const server = new ServerProcess({
        name: 'ferretdb',
        program,
        args: ['--handler=sqlite', `--sqlite-url=file:${dataDir}/`,
            `--listen-addr=127.0.0.1:${port}`, `--debug-addr=127.0.0.1:${debugPort}`,
            `--state-dir=${d.dir}`, '--telemetry=disable', '--log-level=warn', ...tlsArgs],
        dir: d.dir,
        ownsDir: d.ownsDir,
        ping: () => pingMongo(uri),
    });
    server.port = port;
    server.uri = uri;
    server.tlsPort = tlsPort;
    try {
        await server.start();
    } catch (err) {
        await server.close();
        throw err;
    }
    return server;
}

// A database name no other test file uses: t_<file>_<random>.
function uniqueDbName(label) {
    const base = label || path.basename(require.main ? require.main.filename : 'test', '.js');
    const slug = base.replace(/[^A-Za-z0-9]+/g, '_').slice(0, 32);
    return `t_${slug}_${crypto.randomBytes(4).toString('hex')}`;
}

// The servers for one test file. Resolves with
//   { mongodbUri, redisUrl, mongo, redis, skip, close() }
// mongodbUri names a database of its own (uniqueDbName). mongo and redis
// are the started ServerProcess objects, or null when the environment
// supplied the server (or it was not asked for). skip is null, or the reason
// the servers cannot be had here: pass it as node:test's skip option.
async function getServices({ mongo = true, redis = true, label } = {}) {
    const out = { mongodbUri: null, redisUrl: null, mongo: null, redis: null, skip: null };
    out.close = async () => {
        await Promise.all([out.mongo && out.mongo.close(), out.redis && out.redis.close()]);
    };
    try {
        if (mongo) {
            if (process.env.DNODED_TEST_MONGODB_URI) {
                out.mongodbUri = process.env.DNODED_TEST_MONGODB_URI;
            } else if (!findProgram('ferretdb', 'DNODED_TEST_FERRETDB')) {
                out.skip = 'no MongoDB-compatible server: set DNODED_TEST_MONGODB_URI ' +
                    'or install ferretdb (scripts/setup)';
                return out;
            } else {
                out.mongo = await startFerretDB();
                out.mongodbUri = out.mongo.uri;
            }
            out.mongodbUri = withDatabase(out.mongodbUri, uniqueDbName(label));
        }
        if (redis) {
            if (process.env.DNODED_TEST_REDIS_URL) {
                out.redisUrl = process.env.DNODED_TEST_REDIS_URL;
            } else if (!findProgram('redis-server', 'DNODED_TEST_REDIS_SERVER')) {
                out.skip = 'no Redis: set DNODED_TEST_REDIS_URL or install redis-server';
                return out;
            } else {
                out.redis = await startRedis();
                out.redisUrl = out.redis.url;
            }
        }
    } catch (err) {
        await out.close();
        throw err;
    }
    return out;
}

// ------------------------------------------------------------------ CLI
// node tests/lib/services.js [--no-redis] [--no-mongo] [--dir DIR] [--write-env FILE]
// (not --env-file: node 20 takes that option for itself wherever it appears)
// Starts what the environment does not already provide, writes
// "export NAME='value'" lines (to FILE, else stdout) once both answer, and
// runs until SIGTERM or SIGINT, then stops them. With --dir the servers keep
// their files under DIR (DIR/redis, DIR/ferretdb) instead of a temp dir.
//
// node tests/lib/services.js --run PROGRAM [ARGS...]
// Runs PROGRAM (make check's LOG_COMPILER for Check programs) and exits with
// its status. A program under tests/integration/ first gets the servers the
// environment does not name, exported as DNODED_TEST_MONGODB_URI and
// DNODED_TEST_REDIS_URL; if they cannot be started it runs without them
// (and skips itself).

async function runProgram(argv) {
    const [program, ...args] = argv;
    const { spawn } = require('node:child_process');
    const env = { ...process.env };
    const started = [];
    if (/(^|\/)integration\//.test(program)) {
        try {
            if (!env.DNODED_TEST_MONGODB_URI && findProgram('ferretdb', 'DNODED_TEST_FERRETDB')) {
                const s = await startFerretDB();
                started.push(s);
                env.DNODED_TEST_MONGODB_URI = s.uri;
            }
            if (!env.DNODED_TEST_REDIS_URL && findProgram('redis-server',
                'DNODED_TEST_REDIS_SERVER')) {
                const s = await startRedis();
                started.push(s);
                env.DNODED_TEST_REDIS_URL = s.url;
            }
        } catch (err) {
            process.stderr.write(`services.js: running ${program} without servers: ` +
                `${err.message}\n`);
        }
    }
    const child = spawn(program, args, { stdio: 'inherit', env });
    const forward = (sig) => child.kill(sig);
    process.on('SIGTERM', forward);
    process.on('SIGINT', forward);
    const status = await new Promise((resolve) => {
        child.once('error', (err) => {
            process.stderr.write(`services.js: cannot run ${program}: ${err.message}\n`);
            resolve(127);
        });
        child.once('exit', (code, signal) => {
            resolve(signal ? 128 + (require('node:os').constants.signals[signal] || 0) : code);
        });
    });
    await Promise.all(started.map((s) => s.close()));
    return status;
}

function shellQuote(s) {
    return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

async function main(argv) {
    if (argv[0] === '--run' && argv.length > 1) {
        return runProgram(argv.slice(1));
    }
    const opts = { redis: true, mongo: true, dir: null, envFile: null };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--no-redis') {
            opts.redis = false;
        } else if (a === '--no-mongo') {
            opts.mongo = false;
        } else if (a === '--dir' && i + 1 < argv.length) {
            opts.dir = argv[++i];
        } else if (a === '--write-env' && i + 1 < argv.length) {
            opts.envFile = argv[++i];
        } else {
            process.stderr.write(`services.js: unknown argument ${a}\n`);
            return 2;
        }
    }
    const started = [];
    const lines = [];
    const stopAll = () => Promise.all(started.map((s) => s.close()));
    try {
        if (opts.mongo && !process.env.DNODED_TEST_MONGODB_URI) {
            const s = await startFerretDB({ dir: opts.dir && path.join(opts.dir, 'ferretdb') });
            started.push(s);
            lines.push(`export DNODED_TEST_MONGODB_URI=${shellQuote(s.uri)}`);
        }
        if (opts.redis && !process.env.DNODED_TEST_REDIS_URL) {
            const s = await startRedis({ dir: opts.dir && path.join(opts.dir, 'redis') });
            started.push(s);
            lines.push(`export DNODED_TEST_REDIS_URL=${shellQuote(s.url)}`);
        }
    } catch (err) {
        process.stderr.write(`services.js: ${err.message}\n`);
        await stopAll();
        return 1;
    }
    const text = lines.join('\n') + '\n';
    if (opts.envFile) {
        // Written whole, then renamed, so a reader never sees half of it.
        fs.writeFileSync(opts.envFile + '.tmp', text);
        fs.renameSync(opts.envFile + '.tmp', opts.envFile);
    } else {
        process.stdout.write(text);
    }
    const watch = setInterval(() => {
        for (const s of started) {
            if (s.proc && !s.running && !s.reported) {
                s.reported = true;
                process.stderr.write(`services.js: ${s.name} exited unexpectedly; ` +
                    `see ${s.logPath}\n`);
            }
        }
    }, 1000 * timeScale);
    await new Promise((resolve) => {
        process.once('SIGTERM', resolve);
        process.once('SIGINT', resolve);
        process.once('SIGHUP', resolve);
    });
    clearInterval(watch);
    await stopAll();
    return 0;
}

if (require.main === module) {
    main(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
        process.stderr.write(`services.js: ${err.stack}\n`);
        process.exit(1);
    });
}

module.exports = {
    ServerProcess,
    startRedis,
    startFerretDB,
    getServices,
    uniqueDbName,
    withDatabase,
};
