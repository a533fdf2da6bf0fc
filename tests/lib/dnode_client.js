'use strict';
// dnode_client: a small raw DNode peer over TCP (one JSON message per line)
// for integration tests. It speaks the protocol the way the npm dnode
// package does (methods handshake, callback ids and paths, cull) but keeps
// every message it receives so a test can await the one it expects, and can
// also send arbitrary bytes. It holds no opinion about the server's answers.

const net = require('node:net');
const tls = require('node:tls');

const { timeScale } = require('./proc');

function isObject(v) {
    return v !== null && typeof v === 'object';
}

function getPath(root, p) {
    let v = root;
    for (const k of p) {
        if (!isObject(v)) {
            return undefined;
        }
        v = v[k];
    }
    return v;
}

function setPath(root, p, value) {
    let v = root;
    for (const k of p.slice(0, -1)) {
        if (!isObject(v)) {
            return false;
        }
        v = v[k];
    }
    if (!isObject(v) || p.length === 0) {
        return false;
    }
    v[p[p.length - 1]] = value;
    return true;
}

class DnodeClient {
    // Use DnodeClient.connect().
    constructor(sock, { methods = {}, timeoutMs = 10000 * timeScale } = {}) {
        this.sock = sock;
        this.timeoutMs = timeoutMs;
        this.localMethods = methods;
        this.callbacks = new Map(); // id -> function we exported
        this.callbackNames = new Map(); // id -> name, for the methods object
        this.nextId = 0;
        this.remoteMethods = {}; // name -> callback id, from the server's methods
        this.inbox = []; // received messages not yet taken by next()
        this.received = []; // every message received, in order
        this.badLines = []; // lines that were not JSON
        this.waiters = [];
        this.buf = '';
        this.closed = new Promise((resolve) => {
            sock.on('close', () => {
                this.isClosed = true;
                for (const w of this.waiters.splice(0)) {
                    clearTimeout(w.timer);
                    w.reject(new Error(`connection closed while waiting for ${w.what}`));
                }
                resolve();
            });
        });
        this.isClosed = false;
        sock.setEncoding('utf8');
        sock.on('data', (d) => this.onData(d));
        sock.on('error', (err) => {
            this.error = err;
        });
        this.ready = this.next((m) => m.method === 'methods', {
            what: 'the server\'s methods message', take: false,
        }).then((m) => m);
        this.ready.catch(() => {});
    }

    // Connects to host:port. Unless handshake is false, sends our methods
    // message first (methods: the functions the server may call, such as
    // created/updated/deleted/subscribed/unsubscribed). tlsOptions: over TLS
    // (node:tls options such as ca and servername), once the handshake is done.
    static connect(port, { host = '127.0.0.1', methods = {}, handshake = true,
        timeoutMs, tlsOptions = null } = {}) {
        return new Promise((resolve, reject) => {
            const sock = tlsOptions ? tls.connect({ port, host, ...tlsOptions })
                : net.connect({ port, host });
            sock.once('error', reject);
            sock.once(tlsOptions ? 'secureConnect' : 'connect', () => {
                sock.removeListener('error', reject);
                const c = new DnodeClient(sock, { methods, timeoutMs });
                if (handshake) {
                    c.send(c.request('methods', [methods]));
                }
                resolve(c);
            });
        });
    }

    onData(d) {
        this.buf += d;
        let i;
        while ((i = this.buf.indexOf('\n')) >= 0) {
            const line = this.buf.slice(0, i);
            this.buf = this.buf.slice(i + 1);
            if (line.trim() === '') {
                continue;
            }
            let msg;
            try {
                msg = JSON.parse(line);
            } catch (err) {
                this.badLines.push(line);
                continue;
            }
            this.handle(msg);
        }
    }

    handle(msg) {
        this.received.push(msg);
        if (isObject(msg) && msg.method === 'methods' && Array.isArray(msg.arguments)) {
            for (const [id, p] of Object.entries(msg.callbacks || {})) {
                if (Array.isArray(p) && p.length === 2 && String(p[0]) === '0') {
                    this.remoteMethods[p[1]] = Number(id);
                }
            }
        }
        if (isObject(msg)) {
            msg.args = this.unscrub(msg);
            const fn = this.resolveLocal(msg.method);
            if (fn) {
                msg.name = this.callbackNames.get(Number(msg.method)) || msg.method;
                try {
                    fn(...msg.args);
                } catch (err) {
                    this.callbackError = err;
                }
            } else if (msg.method === 'cull' && Array.isArray(msg.arguments)) {
                for (const id of msg.arguments) {
                    this.callbacks.delete(Number(id));
                }
            }
        }
        this.inbox.push(msg);
        this.wake();
    }

    resolveLocal(method) {
        if (typeof method === 'number') {
            return this.callbacks.get(method);
        }
        if (typeof method === 'string' && method !== 'methods' &&
            Object.prototype.hasOwnProperty.call(this.localMethods, method) &&
            typeof this.localMethods[method] === 'function') {
            return this.localMethods[method];
        }
        return null;
    }

    // A copy of msg.arguments with the server's callbacks turned into
    // functions that call it back.
    unscrub(msg) {
        if (!Array.isArray(msg.arguments)) {
            return [];
        }
        const args = JSON.parse(JSON.stringify(msg.arguments));
        for (const [id, p] of Object.entries(msg.callbacks || {})) {
            if (Array.isArray(p) && p.length > 0) {
                setPath(args, p.map(String), (...a) => this.send(this.request(Number(id), a)));
            }
        }
        return args;
    }

    // Builds a DNode message: every function inside args is registered as a
    // callback of ours and replaced by "[Function]" (same function, same id).
    request(method, args) {
        const callbacks = {};
        const walk = (v, p) => {
            if (typeof v === 'function') {
                let id = [...this.callbacks.entries()].find(([, f]) => f === v)?.[0];
                if (id === undefined) {
                    id = this.nextId++;
                    this.callbacks.set(id, v);
                    if (method === 'methods' && p.length === 2) {
                        this.callbackNames.set(id, p[1]);
                    }
                }
                callbacks[id] = p;
                return '[Function]';
            }
            if (Array.isArray(v)) {
                return v.map((x, i) => walk(x, [...p, String(i)]));
            }
            if (isObject(v) && !(v instanceof Date)) {
                const o = {};
                for (const [k, x] of Object.entries(v)) {
                    o[k] = walk(x, [...p, k]);
                }
                return o;
            }
            return v;
        };
        const scrubbed = walk(args, []);
        return { method, arguments: scrubbed, callbacks, links: [] };
    }

    // Writes one message (an object, or a raw string sent as is plus '\n').
    send(msg) {
        const line = typeof msg === 'string' ? msg : JSON.stringify(msg);
        this.sock.write(line + '\n');
    }

    // Writes bytes exactly as given (framing tests).
    sendRaw(data) {
        this.sock.write(data);
    }

    // Calls a server method; functions in args become callbacks. The method
    // is addressed by the id from the server's methods message once that has
    // arrived, else by name.
    call(name, ...args) {
        const id = Object.prototype.hasOwnProperty.call(this.remoteMethods, name)
            ? this.remoteMethods[name] : name;
        this.send(this.request(id, args));
    }

    // A fresh callback: { fn, args } where args is a promise of the argument
    // list fn is first called with (rejects after timeoutMs or on close).
    callback(timeoutMs = this.timeoutMs, what = 'a callback') {
        let resolve;
        let reject;
        const args = new Promise((res, rej) => {
            resolve = res;
            reject = rej;
        });
        const timer = setTimeout(() => reject(new Error(`${what} not called within ` +
            `${timeoutMs} ms`)), timeoutMs);
        this.closed.then(() => {
            clearTimeout(timer);
            reject(new Error(`connection closed before ${what} was called`));
        });
        const fn = (...a) => {
            clearTimeout(timer);
            resolve(a);
        };
        args.catch(() => {});
        return { fn, args };
    }

    // Calls name(...args, opt, fn), where opt is the last of args with
    // opt.error added: resolves { doc } when fn is called first, { error }
    // when opt.error is; rejects after timeoutMs, or when the connection
    // closes before either.
    answer(name, args, timeoutMs = this.timeoutMs) {
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no answer to ${name} within ` +
                `${timeoutMs} ms`)), timeoutMs);
            const done = (v) => {
                clearTimeout(timer);
                resolve(v);
            };
            this.closed.then(() => {
                clearTimeout(timer);
                reject(new Error(`connection closed before ${name} answered`));
            });
            const opt = { ...args[args.length - 1], error: (error) => done({ error }) };
            this.call(name, ...args.slice(0, -1), opt, (doc) => done({ doc }));
        });
    }

    // Waits for the server's methods message, then calls name(...args, cb)
    // and resolves with cb's arguments. Errors the server reports through
    // opt.error are the test's to catch with its own callback.
    async invoke(name, ...args) {
        await this.ready;
        const cb = this.callback(this.timeoutMs, `the reply to ${name}`);
        this.call(name, ...args, cb.fn);
        return cb.args;
    }

    wake() {
        for (let i = 0; i < this.waiters.length; i++) {
            const w = this.waiters[i];
            const idx = this.inbox.findIndex(w.pred);
            if (idx >= 0) {
                const msg = this.inbox[idx];
                if (w.take) {
                    this.inbox.splice(idx, 1);
                }
                this.waiters.splice(i--, 1);
                clearTimeout(w.timer);
                w.resolve(msg);
            }
        }
    }

    // The first received message matching pred that no earlier next() took
    // (earlier arrivals count). Rejects after timeoutMs, or if the connection
    // closes first. take: false leaves the message for later next() calls.
    next(pred = () => true, { timeoutMs = this.timeoutMs, what = 'a matching message',
        take = true } = {}) {
        return new Promise((resolve, reject) => {
            const w = { pred, resolve, reject, what, take, timer: null };
            w.timer = setTimeout(() => {
                const i = this.waiters.indexOf(w);
                if (i >= 0) {
                    this.waiters.splice(i, 1);
                }
                const recent = this.received.slice(-5).map((m) => JSON.stringify(m)).join('\n  ');
                reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ` +
                    `last messages:\n  ${recent}`));
            }, timeoutMs);
            this.waiters.push(w);
            this.wake();
            if (this.isClosed && this.waiters.includes(w)) {
                this.waiters.splice(this.waiters.indexOf(w), 1);
                clearTimeout(w.timer);
                reject(new Error(`connection closed while waiting for ${what}`));
            }
        });
    }

    // The arguments of the next call of our exported method name
    // (e.g. 'created'), as the server sent them.
    async nextCall(name, opts = {}) {
        const msg = await this.next((m) => m.name === name, { what: `a call of ${name}`, ...opts });
        return msg.args;
    }

    // Tells the server it may forget our callbacks ids.
    cull(...ids) {
        for (const id of ids) {
            this.callbacks.delete(id);
        }
        this.send({ method: 'cull', arguments: ids, callbacks: {}, links: [] });
    }

    // Resolves once the server closed the connection (rejects after timeoutMs).
    waitClosed(timeoutMs = this.timeoutMs) {
        let timer;
        const t = new Promise((resolve, reject) => {
            timer = setTimeout(() => reject(new Error(`connection still open after ` +
                `${timeoutMs} ms`)), timeoutMs);
        });
        return Promise.race([this.closed.then(() => clearTimeout(timer)), t]);
    }

    close() {
        this.sock.end();
        this.sock.destroy();
    }
}

module.exports = { DnodeClient, getPath };
