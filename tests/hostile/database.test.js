'use strict';
// Hostile reads: a read whose answer would be huge. The worker builds an
// answer whole before queueing it, so past max_reply_bytes the read is
// refused with an error naming the limit, and nothing is built.

const test = require('node:test');
const assert = require('node:assert');

const { startDnoded } = require('../lib/harness');
const { getServices } = require('../lib/services');
const { findProgram } = require('../lib/proc');
const { assertAnswered } = require('../lib/hostile');

const skip = process.env.DNODED_TEST_MONGODB_URI || findProgram('ferretdb', 'DNODED_TEST_FERRETDB')
    ? false : 'needs ferretdb (scripts/setup) or DNODED_TEST_MONGODB_URI';

const MODELS = { blob: { fields: { body: 'String', batch: 'String' } } };

// method(...args, opt) with opt.error: resolves { doc } or { error }.
function call(c, method, ...args) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to ${method}`)), 60000);
        const done = (v) => {
            clearTimeout(timer);
            resolve(v);
        };
        const opt = { ...args[args.length - 1], error: (error) => done({ error }) };
        c.call(method, ...args.slice(0, -1), opt, (doc) => done({ doc }));
    });
}

test('a read past max_reply_bytes is refused, naming the limit',
    { skip }, async (t) => {
        const services = await getServices({ redis: false });
        t.after(() => services.close());
        const d = await startDnoded({
            services, models: MODELS, config: { workers: 1, max_reply_bytes: '2m' },
        }, t);
        const c = await d.connect();
        t.after(() => c.close());
        const batch = `b${process.pid}${Date.now()}`;
        const body = 'x'.repeat(100000);
        for (let i = 0; i < 40; i++) { // 4 MB stored
            const r = await call(c, 'create', { body, batch }, { type: 'blob' });
            assert.ok(r.doc, JSON.stringify(r.error));
        }
        const reads = [];
        for (let i = 0; i < 4; i++) {
            reads.push(call(c, 'read', { type: 'blob', query: { batch } }));
        }
        for (const r of await Promise.all(reads)) {
            assert.ok(r.error, 'the read is refused');
            assert.strictEqual(r.error.name, 'InvalidRequest');
            assert.match(r.error.message, /max_reply_bytes/);
        }
        // Fewer documents fit.
        const few = await call(c, 'read', { type: 'blob', query: { batch }, sorting: { limit: 5 } });
        assert.strictEqual(few.doc.length, 5);
        await assertAnswered(d, 2000);
    });
