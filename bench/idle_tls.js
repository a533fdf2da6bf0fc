'use strict';
// idle_tls: RSS growth of one dnoded worker per idle session, over plain
// TCP and over TLS, for bench/run. Opens N sessions (each sends its methods
// and waits for the server's), reads the worker's VmRSS before and after,
// closes them; plain first, then TLS, on the same worker.
//   node bench/idle_tls.js PLAIN_PORT TLS_PORT WORKER_PID N
// Prints one line: {"plain_bytes": B, "tls_bytes": B, "sessions": N}.
// The client does not check the server's certificate: a load generator,
// not a client anyone relies on (the tests check it).

const fs = require('node:fs');
const net = require('node:net');
const tls = require('node:tls');

const [port, tlsPort, workerPid, n] = process.argv.slice(2).map(Number);
const METHODS = '{"method":"methods","arguments":[{}],"callbacks":{}}\n';

function rssKiB() {
    return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${workerPid}/status`, 'utf8'))[1]);
}

function one(kind, socks) {
    return new Promise((resolve, reject) => {
        const s = kind === 'tls'
            ? tls.connect({ port: tlsPort, host: '127.0.0.1', rejectUnauthorized: false })
            : net.connect({ port, host: '127.0.0.1' });
        socks.push(s);
        s.on('error', reject);
        s.once(kind === 'tls' ? 'secureConnect' : 'connect', () => s.write(METHODS));
        s.once('data', () => resolve());
    });
}

async function perSession(kind) {
    const socks = [];
    const before = rssKiB();
    for (let i = 0; i < n; i += 100) {
        const batch = [];
        for (let j = i; j < Math.min(n, i + 100); j++) {
            batch.push(one(kind, socks));
        }
        await Promise.all(batch);
    }
    await new Promise((r) => setTimeout(r, 1000));
    const bytes = Math.round(((rssKiB() - before) * 1024) / n);
    for (const s of socks) {
        s.destroy();
    }
    await new Promise((r) => setTimeout(r, 1000));
    return bytes;
}

(async () => {
    const plain = await perSession('plain');
    const secure = await perSession('tls');
    console.log(JSON.stringify({ plain_bytes: plain, tls_bytes: secure, sessions: n }));
})().catch((err) => {
    console.error(err.message);
    process.exit(1);
});
