'use strict';
// fanout.js: the load generator of bench/fanout.sh. Opens SUBS raw DNode TCP
// sessions spread round-robin over the given dnoded addresses, subscribes
// them all to one channel, then one publisher session sends MSGS messages at
// RATE per second. Each message carries its send time; every delivery's
// latency is measured in this process (one clock). Prints one JSON line:
//   {subs, msgs, expected, delivered, seconds, delivered_per_s, p50_ms, p99_ms, max_ms}
// Usage: node fanout.js HOST:PORT[,HOST:PORT...] [SUBS] [MSGS] [RATE]

const net = require('node:net');
const { performance } = require('node:perf_hooks');

const targets = (process.argv[2] || '127.0.0.1:8080').split(',').map((a) => {
    const i = a.lastIndexOf(':');
    return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
});
const SUBS = Number(process.argv[3] || 5000);
const MSGS = Number(process.argv[4] || 100);
const RATE = Number(process.argv[5] || 50);
const URL = '/bench/fanout';
const DEADLINE_MS = 120000;

const line = (o) => JSON.stringify(o) + '\n';
const METHODS = line({ method: 'methods', arguments: [{ created: '[Function]' }],
    callbacks: { 0: ['0', 'created'] }, links: [] });
const SUBSCRIBE = line({ method: 'subscribe', arguments: [URL, '[Function]'],
    callbacks: { 1: ['1'] }, links: [] });

const started = performance.now();
const lat = new Float64Array(SUBS * MSGS);
let nlat = 0;
let acked = 0;
let warm = 0;
let lastRecv = 0;
const warmed = new Uint8Array(SUBS);

function fail(why) {
    process.stderr.write(`fanout.js: ${why}\n`);
    process.exit(1);
}

setTimeout(() => fail(`deadline: acked ${acked}, warm ${warm}, delivered ${nlat}`),
    DEADLINE_MS).unref();

function open(i) {
    return new Promise((resolve, reject) => {
        const t = targets[i % targets.length];
        const s = net.connect({ host: t.host, port: t.port });
        let buf = '';
        s.setEncoding('utf8');
        s.once('error', reject);
        s.on('close', () => {
            if (!done) {
                fail(`session ${i} closed by the server`);
            }
        });
        s.on('data', (d) => {
            buf += d;
            let j;
            while ((j = buf.indexOf('\n')) >= 0) {
                const l = buf.slice(0, j);
                buf = buf.slice(j + 1);
                if (l.startsWith('{"method":"created"')) {
                    const now = performance.now();
                    const m = /"t":([0-9.e+-]+)/.exec(l);
                    if (l.includes('"w":1')) {
                        if (!warmed[i]) {
                            warmed[i] = 1;
                            warm++;
                        }
                    } else if (m) {
                        lat[nlat++] = now - Number(m[1]);
                        lastRecv = now;
                    }
                } else if (l.startsWith('{"method":1,')) {
                    acked++;
                }
            }
        });
        s.once('connect', () => {
            s.write(METHODS + SUBSCRIBE);
            resolve(s);
        });
    });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(pred, what, ms = 60000) {
    const end = performance.now() + ms;
    while (!pred()) {
        if (performance.now() > end) {
            fail(`timed out waiting for ${what}`);
        }
        await sleep(20);
    }
}

let done = false;

async function main() {
    const socks = [];
    for (let i = 0; i < SUBS; i += 250) {
        const batch = [];
        for (let k = i; k < Math.min(SUBS, i + 250); k++) {
            batch.push(open(k));
        }
        socks.push(...await Promise.all(batch));
    }
    await until(() => acked === SUBS, `${SUBS} subscribe replies (have ${acked})`);
    process.stderr.write('subscribed\n'); // fanout.sh looks at the split now
    await sleep(1000);
    const pub = await new Promise((resolve, reject) => {
        const s = net.connect(targets[0]);
        s.once('error', reject);
        s.once('connect', () => resolve(s));
        s.resume();
    });
    pub.write(line({ method: 'methods', arguments: [{}], callbacks: {}, links: [] }));
    const publish = (doc) => pub.write(line({ method: 'publish',
        arguments: [doc, { url: URL, method: 'create' }], callbacks: {}, links: [] }));
    // Subscriptions travel through Redis asynchronously: warm up until every
    // session has received something.
    while (warm < SUBS) {
        publish({ w: 1 });
        await sleep(200);
        if (performance.now() - started > DEADLINE_MS / 2) {
            fail(`only ${warm} of ${SUBS} sessions receive anything`);
        }
    }
    await sleep(300);
    const first = performance.now();
    for (let k = 0; k < MSGS; k++) {
        const due = first + (k * 1000) / RATE;
        const wait = due - performance.now();
        if (wait > 0) {
            await sleep(wait);
        }
        publish({ k, t: performance.now() });
    }
    const expected = SUBS * MSGS;
    const endBy = performance.now() + 30000;
    while (nlat < expected && performance.now() < endBy) {
        await sleep(20);
    }
    done = true;
    const v = Array.from(lat.subarray(0, nlat)).sort((a, b) => a - b);
    const q = (p) => (v.length ? v[Math.min(v.length - 1, Math.floor(p * v.length))] : NaN);
    const seconds = (lastRecv - first) / 1000;
    process.stdout.write(JSON.stringify({
        subs: SUBS,
        msgs: MSGS,
        rate: RATE,
        expected,
        delivered: nlat,
        seconds: Number(seconds.toFixed(3)),
        delivered_per_s: Math.round(nlat / seconds),
        p50_ms: Number(q(0.5).toFixed(2)),
        p99_ms: Number(q(0.99).toFixed(2)),
        max_ms: Number((v[v.length - 1] || NaN).toFixed(2)),
    }) + '\n');
    for (const s of socks) {
        s.destroy();
    }
    pub.destroy();
}

main().catch((err) => fail(err.stack));
