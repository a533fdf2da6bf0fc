'use strict';
// redis: a minimal RESP2 client for tests: run commands (PING, PUBLISH,
// PUBSUB NUMSUB, ...) and watch channels the way another host would, without
// a client package. Replies map to strings, numbers, arrays and null; error
// replies reject. No AUTH, TLS or cluster support.

const net = require('node:net');

// { host, port, db } of redis://host:port[/db].
function parseUrl(url) {
    const u = new URL(url);
    if (u.protocol !== 'redis:') {
        throw new Error(`not a redis:// URL: ${url}`);
    }
    const db = u.pathname && u.pathname !== '/' ? Number(u.pathname.slice(1)) : 0;
    return { host: u.hostname || '127.0.0.1', port: Number(u.port || 6379), db,
        user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
}

function encodeCommand(args) {
    const parts = [`*${args.length}\r\n`];
    for (const a of args) {
        const s = Buffer.isBuffer(a) ? a : Buffer.from(String(a), 'utf8');
        parts.push(`$${s.length}\r\n`, s, '\r\n');
    }
    return Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p))));
}

// Parses one reply at buf[pos..]; returns [value, nextPos] or null when the
// reply is not complete yet. Error replies come back as Error objects.
function parseReply(buf, pos) {
    if (pos >= buf.length) {
        return null;
    }
    const eol = buf.indexOf('\r\n', pos);
    if (eol < 0) {
        return null;
    }
    const line = buf.toString('utf8', pos + 1, eol);
    const next = eol + 2;
    switch (buf[pos]) {
    case 0x2b: // +
        return [line, next];
    case 0x2d: // -
        return [new Error(line), next];
    case 0x3a: // :
        return [Number(line), next];
    case 0x24: { // $
        const len = Number(line);
        if (len < 0) {
            return [null, next];
        }
        if (buf.length < next + len + 2) {
            return null;
        }
        return [buf.toString('utf8', next, next + len), next + len + 2];
    }
    case 0x2a: { // *
        const n = Number(line);
        if (n < 0) {
            return [null, next];
        }
        const items = [];
        let p = next;
        for (let i = 0; i < n; i++) {
            const r = parseReply(buf, p);
            if (!r) {
                return null;
            }
            items.push(r[0]);
            p = r[1];
        }
        return [items, p];
    }
    default:
        throw new Error(`RESP: unexpected byte 0x${buf[pos].toString(16)}`);
    }
}

class RedisConnection {
    constructor(sock, timeoutMs) {
        this.sock = sock;
        this.timeoutMs = timeoutMs;
        this.pending = [];
        this.pushes = [];
        this.waiters = [];
        this.buf = Buffer.alloc(0);
        this.closedError = null;
        sock.on('data', (d) => this.onData(d));
        sock.on('error', (err) => this.fail(err));
        sock.on('close', () => this.fail(new Error('connection closed')));
    }

    // Connects (AUTH with the URL's credentials, and SELECT its db when not
    // 0); rejects after timeoutMs.
    static connect(url, { timeoutMs = 10000 } = {}) {
        const { host, port, db, user, password } = parseUrl(url);
        return new Promise((resolve, reject) => {
            const sock = net.connect({ host, port });
            const timer = setTimeout(() => {
                sock.destroy();
                reject(new Error(`connect to ${host}:${port} timed out`));
            }, timeoutMs);
            sock.once('error', (err) => {
                clearTimeout(timer);
                reject(err);
            });
            sock.once('connect', () => {
                clearTimeout(timer);
                const conn = new RedisConnection(sock, timeoutMs);
                const auth = password
                    ? conn.command(...(user ? ['AUTH', user, password] : ['AUTH', password]))
                    : Promise.resolve();
                auth.then(() => (db ? conn.command('SELECT', db) : null))
                    .then(() => resolve(conn), (err) => {
                        conn.close();
                        reject(err);
                    });
            });
        });
    }

    fail(err) {
        if (!this.closedError) {
            this.closedError = err;
        }
        for (const p of this.pending.splice(0)) {
            clearTimeout(p.timer);
            p.reject(this.closedError);
        }
        for (const w of this.waiters.splice(0)) {
            clearTimeout(w.timer);
            w.reject(this.closedError);
        }
    }

    onData(d) {
        this.buf = Buffer.concat([this.buf, d]);
        let pos = 0;
        for (;;) {
            const r = parseReply(this.buf, pos);
            if (!r) {
                break;
            }
            pos = r[1];
            this.dispatch(r[0]);
        }
        this.buf = this.buf.subarray(pos);
    }

    dispatch(reply) {
        // Pub/sub messages arrive unasked; everything else answers the
        // oldest pending command.
        const isPush = Array.isArray(reply) && (reply[0] === 'message' || reply[0] === 'pmessage');
        if (!isPush && this.pending.length > 0) {
            const p = this.pending.shift();
            clearTimeout(p.timer);
            if (reply instanceof Error) {
                p.reject(reply);
            } else {
                p.resolve(reply);
            }
            return;
        }
        this.pushes.push(reply);
        this.wake();
    }

    wake() {
        for (let i = 0; i < this.waiters.length; i++) {
            const w = this.waiters[i];
            const idx = this.pushes.findIndex(w.pred);
            if (idx >= 0) {
                const [msg] = this.pushes.splice(idx, 1);
                this.waiters.splice(i--, 1);
                clearTimeout(w.timer);
                w.resolve(msg);
            }
        }
    }

    // Sends one command; resolves with its reply, rejects on an error reply.
    command(...args) {
        if (this.closedError) {
            return Promise.reject(this.closedError);
        }
        return new Promise((resolve, reject) => {
            const entry = { resolve, reject, timer: null };
            entry.timer = setTimeout(() => {
                const i = this.pending.indexOf(entry);
                if (i >= 0) {
                    this.pending.splice(i, 1);
                }
                reject(new Error(`${args[0]} timed out after ${this.timeoutMs} ms`));
                // Replies are matched by order: after a lost one, nothing is reliable.
                this.sock.destroy();
            }, this.timeoutMs);
            this.pending.push(entry);
            this.sock.write(encodeCommand(args));
        });
    }

    // The next pub/sub message (['message', channel, payload]) matching pred,
    // including ones that arrived earlier and were not taken yet.
    nextMessage(pred = () => true, timeoutMs = this.timeoutMs) {
        return new Promise((resolve, reject) => {
            const w = { pred, resolve, reject, timer: null };
            w.timer = setTimeout(() => {
                const i = this.waiters.indexOf(w);
                if (i >= 0) {
                    this.waiters.splice(i, 1);
                }
                reject(new Error(`no matching pub/sub message within ${timeoutMs} ms`));
            }, timeoutMs);
            this.waiters.push(w);
            if (this.closedError) {
                this.fail(this.closedError);
            }
            this.wake();
        });
    }

    close() {
        this.sock.destroy();
    }
}

// One command on a fresh connection: redisCommand(url, 'PING').
async function redisCommand(url, ...args) {
    const conn = await RedisConnection.connect(url);
    try {
        return await conn.command(...args);
    } finally {
        conn.close();
    }
}

module.exports = { parseUrl, RedisConnection, redisCommand };
