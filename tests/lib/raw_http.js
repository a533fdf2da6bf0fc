'use strict';
// raw_http: byte-exact HTTP/1.1 and WebSocket clients over net.Socket for
// tests of dnoded's HTTP side. HttpConn writes requests exactly as given
// (no path normalisation) and parses the responses on one socket;
// WsConn performs the opening handshake and then sends frames built by
// hand (masked or not, fragmented, any opcode) and parses what comes back.

const crypto = require('node:crypto');
const net = require('node:net');

const { timeScale } = require('./proc');

const TIMEOUT_MS = 10000 * timeScale;

function connectSocket(port, host = '127.0.0.1') {
    return new Promise((resolve, reject) => {
        const sock = net.connect({ port, host });
        sock.once('error', reject);
        sock.once('connect', () => {
            sock.removeListener('error', reject);
            resolve(sock);
        });
    });
}

// A byte queue fed by a socket, with "wait until pred(buffer) says so".
class Reader {
    constructor(sock) {
        this.sock = sock;
        this.buf = Buffer.alloc(0);
        this.ended = false;
        this.waiters = [];
        this.closed = new Promise((resolve) => sock.once('close', resolve));
        sock.on('data', (d) => {
            this.buf = Buffer.concat([this.buf, d]);
            this.wake();
        });
        sock.on('error', () => {});
        sock.on('close', () => {
            this.ended = true;
            this.wake();
        });
    }

    wake() {
        for (const w of this.waiters.slice()) {
            w();
        }
    }

    // Resolves with take(buf) once it returns non-null ({value, used});
    // rejects when the socket closes first or after timeoutMs.
    until(take, what, timeoutMs = TIMEOUT_MS) {
        return new Promise((resolve, reject) => {
            let timer = null;
            const check = () => {
                const r = take(this.buf);
                if (r) {
                    this.buf = this.buf.subarray(r.used);
                    done();
                    resolve(r.value);
                } else if (this.ended) {
                    done();
                    reject(new Error(`connection closed while waiting for ${what}`));
                }
            };
            const done = () => {
                clearTimeout(timer);
                this.waiters.splice(this.waiters.indexOf(check), 1);
            };
            timer = setTimeout(() => {
                done();
                reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
            }, timeoutMs);
            this.waiters.push(check);
            check();
        });
    }

    waitClosed(timeoutMs = TIMEOUT_MS) {
        let timer;
        return Promise.race([
            this.closed.then(() => clearTimeout(timer)),
            new Promise((resolve, reject) => {
                timer = setTimeout(() => reject(new Error(`connection still open after ` +
                    `${timeoutMs} ms`)), timeoutMs);
            }),
        ]);
    }
}

// Parses one response at the head of buf: {status, headers, body} or null.
// headOnly: a response to HEAD (or 304/101) has no body whatever its
// Content-Length says.
function parseResponse(buf, headOnly) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) {
        return null;
    }
    const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(lines[0]);
    if (!m) {
        throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`);
    }
    const headers = {};
    for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    const status = Number(m[1]);
    const noBody = headOnly || status === 304 || status === 101;
    const len = noBody ? 0 : Number(headers['content-length'] || 0);
    if (buf.length < end + 4 + len) {
        return null;
    }
    const body = buf.subarray(end + 4, end + 4 + len);
    return { value: { status, headers, body, text: body.toString('utf8') }, used: end + 4 + len };
}

class HttpConn {
    static async open(port, host) {
        return new HttpConn(await connectSocket(port, host), host);
    }

    constructor(sock, host = '127.0.0.1') {
        this.sock = sock;
        this.host = host;
        this.reader = new Reader(sock);
    }

    // Writes one request for target (sent verbatim) with extra headers.
    send(target, { method = 'GET', headers = {} } = {}) {
        const lines = [`${method} ${target} HTTP/1.1`, `Host: ${this.host}`];
        for (const [k, v] of Object.entries(headers)) {
            lines.push(`${k}: ${v}`);
        }
        this.sock.write(lines.join('\r\n') + '\r\n\r\n');
    }

    response({ head = false } = {}) {
        return this.reader.until((b) => parseResponse(b, head), 'an HTTP response');
    }

    async request(target, opts = {}) {
        this.send(target, opts);
        return this.response({ head: opts.method === 'HEAD' });
    }

    close() {
        this.sock.destroy();
    }
}

// One request on a new connection.
async function httpGet(port, target, opts = {}) {
    const c = await HttpConn.open(port);
    try {
        return await c.request(target, opts);
    } finally {
        c.close();
    }
}

// A WebSocket frame: fin, opcode, payload; masked unless mask === false.
function frame(opcode, payload, { fin = true, mask = true } = {}) {
    const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload || '');
    const len = data.length;
    let head;
    if (len < 126) {
        head = Buffer.from([0, len]);
    } else if (len < 65536) {
        head = Buffer.alloc(4);
        head[1] = 126;
        head.writeUInt16BE(len, 2);
    } else {
        head = Buffer.alloc(10);
        head[1] = 127;
        head.writeBigUInt64BE(BigInt(len), 2);
    }
    head[0] = (fin ? 0x80 : 0) | opcode;
    if (!mask) {
        return Buffer.concat([head, data]);
    }
    head[1] |= 0x80;
    const key = crypto.randomBytes(4);
    const body = Buffer.alloc(len);
    for (let i = 0; i < len; i++) {
        body[i] = data[i] ^ key[i & 3];
    }
    return Buffer.concat([head, key, body]);
}

// Parses one server frame at the head of buf: {fin, opcode, payload} or null.
function parseFrame(buf) {
    if (buf.length < 2) {
        return null;
    }
    if (buf[1] & 0x80) {
        throw new Error('the server sent a masked frame');
    }
    let len = buf[1] & 0x7f;
    let off = 2;
    if (len === 126) {
        if (buf.length < 4) {
            return null;
        }
        len = buf.readUInt16BE(2);
        off = 4;
    } else if (len === 127) {
        if (buf.length < 10) {
            return null;
        }
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
    }
    if (buf.length < off + len) {
        return null;
    }
    return {
        value: { fin: (buf[0] & 0x80) !== 0, opcode: buf[0] & 0x0f,
            payload: buf.subarray(off, off + len) },
        used: off + len,
    };
}

const OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 };

class WsConn {
    // Opens /dnode with the handshake; resolves once the 101 arrived (or
    // rejects with the status when the server refused).
    static async open(port, { path = '/dnode', headers = {}, host = '127.0.0.1' } = {}) {
        const sock = await connectSocket(port, host);
        const c = new WsConn(sock);
        const key = crypto.randomBytes(16).toString('base64');
        const ownHost = Object.keys(headers).some((k) => k.toLowerCase() === 'host');
        const lines = [`GET ${path} HTTP/1.1`, ...(ownHost ? [] : [`Host: ${host}:${port}`]),
            'Upgrade: websocket',
            'Connection: Upgrade', `Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13'];
        for (const [k, v] of Object.entries(headers)) {
            lines.push(`${k}: ${v}`);
        }
        sock.write(lines.join('\r\n') + '\r\n\r\n');
        const res = await c.reader.until((b) => parseResponse(b, true), 'the handshake answer');
        if (res.status !== 101) {
            sock.destroy();
            const err = new Error(`handshake refused with ${res.status}`);
            err.status = res.status;
            throw err;
        }
        const expect = crypto.createHash('sha1')
            .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
        if (res.headers['sec-websocket-accept'] !== expect) {
            sock.destroy();
            throw new Error('wrong Sec-WebSocket-Accept');
        }
        return c;
    }

    constructor(sock) {
        this.sock = sock;
        this.reader = new Reader(sock);
        this.inbox = []; // text messages read while looking for another one
    }

    sendFrame(opcode, payload, opts) {
        this.sock.write(frame(opcode, payload, opts));
    }

    sendText(text) {
        this.sendFrame(OP.TEXT, Buffer.from(text));
    }

    sendJson(msg) {
        this.sendText(JSON.stringify(msg));
    }

    nextFrame(what = 'a frame') {
        return this.reader.until(parseFrame, what);
    }

    // The first text message (parsed JSON) matching pred, earlier arrivals
    // included; others are kept for later calls. Rejects on a close frame.
    async nextMessage(pred = () => true, what = 'a message') {
        const i = this.inbox.findIndex(pred);
        if (i >= 0) {
            return this.inbox.splice(i, 1)[0];
        }
        for (;;) {
            const f = await this.nextFrame(what);
            if (f.opcode === OP.CLOSE) {
                throw new Error(`closed (${closeCode(f)}) while waiting for ${what}`);
            }
            if (f.opcode === OP.TEXT) {
                const msg = JSON.parse(f.payload.toString('utf8'));
                if (pred(msg)) {
                    return msg;
                }
                this.inbox.push(msg);
            }
        }
    }

    // The next close frame's code, skipping other frames.
    async closeCode() {
        for (;;) {
            const f = await this.nextFrame('a close frame');
            if (f.opcode === OP.CLOSE) {
                return closeCode(f);
            }
        }
    }

    waitClosed(timeoutMs) {
        return this.reader.waitClosed(timeoutMs);
    }

    close() {
        this.sock.destroy();
    }
}

function closeCode(f) {
    return f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
}

module.exports = { HttpConn, httpGet, WsConn, frame, parseFrame, OP };
