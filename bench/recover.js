'use strict';
// recover: how long a subscriber coming back takes to be sent N changes it
// missed, for bench/run. A subscriber takes its position on a channel and
// leaves; a publisher publishes N changes (each answered); a new session
// then subscribes with {since: position}: the time from sending that call
// to its answer (recovered: true), with all N changes pushed before it.
//   node bench/recover.js PORT N
// Prints one line: {"missed": N, "replayed": R, "recovered": true, "ms": T}.

const net = require('node:net');

const [port, n] = process.argv.slice(2).map(Number);
const URL = `/bench/recover/${process.pid}`;

// A raw newline-delimited DNode session exporting created.
function session() {
    return new Promise((resolve, reject) => {
        const s = net.connect({ port, host: '127.0.0.1' });
        const waiting = new Map();
        let buf = '';
        let nextId = 1;
        const me = { created: 0, close: () => s.destroy() };
        me.call = (method, ...args) => new Promise((res) => {
            const id = nextId++;
            waiting.set(id, res);
            s.write(`${JSON.stringify({ method, arguments: [...args, '[Function]'],
                callbacks: { [id]: [String(args.length)] } })}\n`);
        });
        s.on('error', reject);
        s.on('connect', () => s.write(`${JSON.stringify({ method: 'methods',
            arguments: [{ created: '[Function]' }], callbacks: { 0: ['0', 'created'] } })}\n`));
        s.on('data', (chunk) => {
            buf += chunk;
            let nl;
            while ((nl = buf.indexOf('\n')) >= 0) {
                const m = JSON.parse(buf.slice(0, nl));
                buf = buf.slice(nl + 1);
                if (m.method === 'methods') {
                    resolve(me);
                } else if (m.method === 'created' || m.method === 0) {
                    me.created++;
                } else if (waiting.has(m.method)) {
                    waiting.get(m.method)(m.arguments);
                    waiting.delete(m.method);
                }
            }
        });
    });
}

(async () => {
    const pub = await session();
    const first = await session();
    const [, pos] = await first.call('subscribe', URL, {});
    first.close();
    const doc = { title: 'a change of a typical size', done: false, order: 1, owner: 'someone' };
    for (let i = 0; i < n; i += 100) {
        const batch = [];
        for (let k = i; k < Math.min(n, i + 100); k++) {
            batch.push(pub.call('publish', { ...doc, k }, { url: URL, method: 'create' }));
        }
        for (const [err] of await Promise.all(batch)) {
            if (err !== null) {
                throw new Error(`publish: ${err}`);
            }
        }
    }
    const back = await session();
    const t0 = process.hrtime.bigint();
    const [err, info] = await back.call('subscribe', URL, { since: pos });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (err !== null || !info.recovered || back.created !== n) {
        throw new Error(`not recovered: ${JSON.stringify({ err, info, replayed: back.created })}`);
    }
    console.log(JSON.stringify({ missed: n, replayed: back.created, recovered: true,
        ms: Math.round(ms * 10) / 10 }));
    back.close();
    pub.close();
})().catch((err) => {
    console.error(err.message);
    process.exit(1);
});
