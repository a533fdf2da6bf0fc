'use strict';
// mongo: just enough of the MongoDB wire protocol (OP_MSG and a BSON codec)
// for tests to look at what dnoded stored, seed collections and ping a
// server, without a driver package. No authentication, TLS or replica sets:
// it talks to the first host of a mongodb:// URI.

const net = require('node:net');

class ObjectId {
    constructor(hex) {
        if (!/^[0-9a-f]{24}$/i.test(hex)) {
            throw new TypeError(`not an ObjectId: ${hex}`);
        }
        this.hex = hex.toLowerCase();
    }

    toString() {
        return this.hex;
    }

    toJSON() {
        return this.hex;
    }
}

// ------------------------------------------------------------------ BSON

function cstring(s) {
    if (s.includes('\0')) {
        throw new TypeError(`BSON key or cstring contains NUL: ${JSON.stringify(s)}`);
    }
    return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.alloc(1)]);
}

function int32(n) {
    const b = Buffer.alloc(4);
    b.writeInt32LE(n);
    return b;
}

function element(key, v) {
    const k = cstring(key);
    const head = (type) => Buffer.concat([Buffer.from([type]), k]);
    if (v === null) {
        return head(0x0a);
    }
    if (typeof v === 'boolean') {
        return Buffer.concat([head(0x08), Buffer.from([v ? 1 : 0])]);
    }
    if (typeof v === 'number') {
        if (Number.isInteger(v) && v >= -2147483648 && v <= 2147483647) {
            return Buffer.concat([head(0x10), int32(v)]);
        }
        if (Number.isSafeInteger(v)) {
            const b = Buffer.alloc(8);
            b.writeBigInt64LE(BigInt(v));
            return Buffer.concat([head(0x12), b]);
        }
        const b = Buffer.alloc(8);
        b.writeDoubleLE(v);
        return Buffer.concat([head(0x01), b]);
    }
    if (typeof v === 'bigint') {
        const b = Buffer.alloc(8);
        b.writeBigInt64LE(v);
        return Buffer.concat([head(0x12), b]);
    }
    if (typeof v === 'string') {
        const s = Buffer.from(v, 'utf8');
        return Buffer.concat([head(0x02), int32(s.length + 1), s, Buffer.alloc(1)]);
    }
    if (v instanceof ObjectId) {
        return Buffer.concat([head(0x07), Buffer.from(v.hex, 'hex')]);
    }
    if (v instanceof Date) {
        const b = Buffer.alloc(8);
        b.writeBigInt64LE(BigInt(v.getTime()));
        return Buffer.concat([head(0x09), b]);
    }
    if (v instanceof RegExp) {
        const flags = v.flags.split('').sort().join('');
        return Buffer.concat([head(0x0b), cstring(v.source), cstring(flags)]);
    }
    if (Buffer.isBuffer(v)) {
        return Buffer.concat([head(0x05), int32(v.length), Buffer.from([0]), v]);
    }
    if (Array.isArray(v)) {
        const doc = {};
        v.forEach((item, i) => {
            doc[String(i)] = item === undefined ? null : item;
        });
        return Buffer.concat([head(0x04), encode(doc)]);
    }
    if (typeof v === 'object') {
        return Buffer.concat([head(0x03), encode(v)]);
    }
    throw new TypeError(`cannot encode ${typeof v} as BSON`);
}

// Encodes a plain object as a BSON document. Integers become int32 when
// they fit, else int64; other numbers doubles. undefined members are left out.
function encode(doc) {
    const parts = [];
    for (const [k, v] of Object.entries(doc)) {
        if (v !== undefined) {
            parts.push(element(k, v));
        }
    }
    const body = Buffer.concat(parts);
    return Buffer.concat([int32(body.length + 5), body, Buffer.alloc(1)]);
}

function readCstring(buf, pos) {
    const end = buf.indexOf(0, pos);
    if (end < 0) {
        throw new Error('BSON: unterminated cstring');
    }
    return [buf.toString('utf8', pos, end), end + 1];
}

// Decodes the BSON document at buf[offset..]. int64 values come back as
// numbers when safe, else BigInt; timestamps as BigInt; decimal128 as a Buffer.
function decode(buf, offset = 0, asArray = false) {
    const size = buf.readInt32LE(offset);
    const end = offset + size - 1;
    if (size < 5 || end >= buf.length || buf[end] !== 0) {
        throw new Error('BSON: bad document length');
    }
    const out = asArray ? [] : {};
    let pos = offset + 4;
    while (pos < end) {
        const type = buf[pos];
        let key;
        [key, pos] = readCstring(buf, pos + 1);
        let v;
        switch (type) {
        case 0x01:
            v = buf.readDoubleLE(pos);
            pos += 8;
            break;
        case 0x02: {
            const len = buf.readInt32LE(pos);
            v = buf.toString('utf8', pos + 4, pos + 4 + len - 1);
            pos += 4 + len;
            break;
        }
        case 0x03:
        case 0x04:
            v = decode(buf, pos, type === 0x04);
            pos += buf.readInt32LE(pos);
            break;
        case 0x05: {
            const len = buf.readInt32LE(pos);
            v = Buffer.from(buf.subarray(pos + 5, pos + 5 + len));
            pos += 5 + len;
            break;
        }
        case 0x07:
            v = new ObjectId(buf.toString('hex', pos, pos + 12));
            pos += 12;
            break;
        case 0x08:
            v = buf[pos] !== 0;
            pos += 1;
            break;
        case 0x09:
            v = new Date(Number(buf.readBigInt64LE(pos)));
            pos += 8;
            break;
        case 0x0a:
            v = null;
            break;
        case 0x0b: {
            let source;
            let flags;
            [source, pos] = readCstring(buf, pos);
            [flags, pos] = readCstring(buf, pos);
            v = new RegExp(source, flags.replace(/[^gimsuy]/g, ''));
            break;
        }
        case 0x10:
            v = buf.readInt32LE(pos);
            pos += 4;
            break;
        case 0x11:
            v = buf.readBigUInt64LE(pos);
            pos += 8;
            break;
        case 0x12: {
            const big = buf.readBigInt64LE(pos);
            v = big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER)
                ? Number(big) : big;
            pos += 8;
            break;
        }
        case 0x13:
            v = Buffer.from(buf.subarray(pos, pos + 16));
            pos += 16;
            break;
        case 0x7f:
            v = { $maxKey: 1 };
            break;
        case 0xff:
            v = { $minKey: 1 };
            break;
        default:
            throw new Error(`BSON: unsupported element type 0x${type.toString(16)}`);
        }
        if (asArray) {
            out.push(v);
        } else {
            out[key] = v;
        }
    }
    return out;
}

// ------------------------------------------------------------------ wire

const OP_MSG = 2013;

// { host, port, db } of a mongodb:// URI (first host only; db may be '').
function parseUri(uri) {
    const m = /^mongodb:\/\/(?:[^@/]*@)?([^/?]+)(?:\/([^?]*))?/.exec(uri);
    if (!m) {
        throw new Error(`not a mongodb:// URI: ${uri}`);
    }
    const first = m[1].split(',')[0];
    let host = first;
    let port = 27017;
    const v6 = /^\[(.*)\](?::(\d+))?$/.exec(first);
    if (v6) {
        host = v6[1];
        port = v6[2] ? Number(v6[2]) : port;
    } else if (first.includes(':')) {
        host = first.slice(0, first.lastIndexOf(':'));
        port = Number(first.slice(first.lastIndexOf(':') + 1));
    }
    return { host, port, db: decodeURIComponent(m[2] || '') };
}

// The same URI with its database path replaced by db (options kept).
function withDatabase(uri, db) {
    const m = /^(mongodb:\/\/[^/?]+)(?:\/[^?]*)?(\?.*)?$/.exec(uri);
    if (!m) {
        throw new Error(`not a mongodb:// URI: ${uri}`);
    }
    return `${m[1]}/${encodeURIComponent(db)}${m[2] || ''}`;
}

class MongoConnection {
    constructor(sock, db, timeoutMs) {
        this.sock = sock;
        this.db = db;
        this.timeoutMs = timeoutMs;
        this.nextId = 1;
        this.pending = new Map();
        this.buf = Buffer.alloc(0);
        this.closedError = null;
        sock.on('data', (d) => this.onData(d));
        sock.on('error', (err) => this.fail(err));
        sock.on('close', () => this.fail(new Error('connection closed')));
    }

    // Connects to the first host of uri; rejects after timeoutMs.
    static connect(uri, { timeoutMs = 10000 } = {}) {
        const { host, port, db } = parseUri(uri);
        return new Promise((resolve, reject) => {
            const sock = net.connect({ host, port });
            const timer = setTimeout(() => {
                sock.destroy();
                reject(new Error(`connect to ${host}:${port} timed out`));
            }, timeoutMs);
            sock.once('connect', () => {
                clearTimeout(timer);
                resolve(new MongoConnection(sock, db || 'test', timeoutMs));
            });
            sock.once('error', (err) => {
                clearTimeout(timer);
                reject(err);
            });
        });
    }

    fail(err) {
        if (!this.closedError) {
            this.closedError = err;
        }
        for (const { reject, timer } of this.pending.values()) {
            clearTimeout(timer);
            reject(this.closedError);
        }
        this.pending.clear();
    }

    onData(d) {
        this.buf = Buffer.concat([this.buf, d]);
        while (this.buf.length >= 16) {
            const len = this.buf.readInt32LE(0);
            if (this.buf.length < len) {
                return;
            }
            const msg = this.buf.subarray(0, len);
            this.buf = this.buf.subarray(len);
            const responseTo = msg.readInt32LE(8);
            const waiter = this.pending.get(responseTo);
            if (!waiter) {
                continue;
            }
            this.pending.delete(responseTo);
            clearTimeout(waiter.timer);
            try {
                if (msg.readInt32LE(12) !== OP_MSG || msg[20] !== 0) {
                    throw new Error('unexpected reply opcode or section kind');
                }
                waiter.resolve(decode(msg, 21));
            } catch (err) {
                waiter.reject(err);
            }
        }
    }

    // Runs cmd (its first key names the command) on db (default: the URI's).
    // Resolves with the reply document; rejects when ok is not 1.
    command(cmd, db = this.db) {
        if (this.closedError) {
            return Promise.reject(this.closedError);
        }
        const id = this.nextId++;
        const body = encode({ ...cmd, $db: db });
        const header = Buffer.alloc(21);
        header.writeInt32LE(21 + body.length, 0);
        header.writeInt32LE(id, 4);
        header.writeInt32LE(0, 8);
        header.writeInt32LE(OP_MSG, 12);
        header.writeUInt32LE(0, 16);
        header[20] = 0;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(id);
                reject(new Error(`${Object.keys(cmd)[0]} timed out after ${this.timeoutMs} ms`));
            }, this.timeoutMs);
            this.pending.set(id, {
                timer,
                reject,
                resolve: (reply) => {
                    if (reply.ok !== 1) {
                        const err = new Error(`${Object.keys(cmd)[0]} failed: ` +
                            `${reply.errmsg || JSON.stringify(reply)}`);
                        err.reply = reply;
                        reject(err);
                    } else {
                        resolve(reply);
                    }
                },
            });
            this.sock.write(Buffer.concat([header, body]));
        });
    }

    async ping() {
        await this.command({ ping: 1 }, 'admin');
        return true;
    }

    // Every document of collection coll matching filter (cursor drained).
    async find(coll, filter = {}, { sort, projection, db = this.db } = {}) {
        const reply = await this.command({
            find: coll, filter, sort, projection, batchSize: 1000,
        }, db);
        const docs = [...reply.cursor.firstBatch];
        let id = reply.cursor.id;
        for (let i = 0; i < 1000 && id && id !== 0 && id !== 0n; i++) {
            const more = await this.command({ getMore: BigInt(id), collection: coll }, db);
            docs.push(...more.cursor.nextBatch);
            id = more.cursor.id;
        }
        return docs;
    }

    async insert(coll, docs, { db = this.db } = {}) {
        return this.command({ insert: coll, documents: docs }, db);
    }

    async dropDatabase(db = this.db) {
        return this.command({ dropDatabase: 1 }, db);
    }

    close() {
        this.sock.destroy();
    }
}

// One command on a fresh connection: mongoCommand(uri, {ping: 1}, 'admin').
async function mongoCommand(uri, cmd, db, opts) {
    const conn = await MongoConnection.connect(uri, opts);
    try {
        return await conn.command(cmd, db);
    } finally {
        conn.close();
    }
}

module.exports = {
    ObjectId,
    encode,
    decode,
    parseUri,
    withDatabase,
    MongoConnection,
    mongoCommand,
};
