'use strict';
// hostile: what the hostile-client tests (tests/hostile/*.test.js) measure
// while an attack runs: a worker's resident memory and open descriptors
// from /proc, the size of dnoded's log, and whether a well-behaved client
// on the same worker is still answered within a stated bound.

const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');

// How much more memory a bound allows in a sanitizer build, where ASan's
// redzones and its quarantine of freed blocks (256 MB by default) hold on
// to memory the plain build gives back.
const RSS_SCALE = process.env.DNODED_SANITIZED ? 3 : 1;

function statusKb(pid, field) {
    try {
        const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
        return m ? Number(m[1]) : 0;
    } catch {
        return 0;
    }
}

// Resident memory of pid in KiB (VmRSS), or 0 when it is gone.
function rssKb(pid) {
    return statusKb(pid, 'VmRSS');
}

// The most resident memory pid has had since it started, in KiB (VmHWM):
// catches a peak that was given back before the test looked.
function peakRssKb(pid) {
    return statusKb(pid, 'VmHWM');
}

// Open file descriptors of pid, or 0 when it is gone.
function fdCount(pid) {
    try {
        return fs.readdirSync(`/proc/${pid}/fd`).length;
    } catch {
        return 0;
    }
}

// Bytes dnoded (master and workers) has written to its log so far.
function logBytes(d) {
    try {
        return fs.statSync(d.stderrPath).size;
    } catch {
        return 0;
    }
}

// A plain TCP connection to port on 127.0.0.1, resolved once connected:
// what an attacker writes raw bytes on.
function rawConnect(port) {
    return new Promise((resolve, reject) => {
        const sock = net.connect(port, '127.0.0.1');
        sock.once('connect', () => resolve(sock));
        sock.once('error', reject);
    });
}

// A well-behaved client is answered: a fresh connection's subscribe
// round trip completes within boundMs. Resolves with the time it took.
async function assertAnswered(d, boundMs, what = 'a well-behaved client') {
    const started = Date.now();
    const c = await d.connect();
    try {
        const reply = await Promise.race([
            c.invoke('subscribe', '/hostile-probe'),
            new Promise((_, reject) => setTimeout(
                () => reject(new Error(`${what} not answered within ${boundMs} ms`)), boundMs)),
        ]);
        assert.deepStrictEqual(reply, [null]);
    } finally {
        c.close();
    }
    const took = Date.now() - started;
    assert.ok(took <= boundMs, `${what} answered in ${took} ms (bound ${boundMs} ms)`);
    return took;
}

module.exports = { RSS_SCALE, rssKb, peakRssKb, fdCount, logBytes, rawConnect, assertAnswered };
