'use strict';
// Redis that requires credentials: redis_url carries them
// (redis://[user]:password@host:port), dnoded sends AUTH on every
// connection and again after Redis restarts, a refused AUTH says so in the
// log, and the password never appears in the log, in /metrics or in a
// config error.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const { startDnoded } = require('../lib/harness');
const { startRedis } = require('../lib/services');
const { findProgram } = require('../lib/proc');
const { httpGet } = require('../lib/raw_http');

const skip = findProgram('redis-server', 'DNODED_TEST_REDIS_SERVER') ? false
    : 'needs redis-server (scripts/setup)';

const PASSWORD = 'pw-Zq7!x%40y'; // as written in a URL: %40 is '@'
const PLAIN = 'pw-Zq7!x@y';

// Two clients on two workers: a publish from one reaches the other through
// Redis. Resolves once it has.
async function crossWorker(t, d) {
    const sub = await d.pushClient(t);
    const pub = await d.connect();
    t.after(() => pub.close());
    const url = `/redis-auth/${Date.now()}`;
    assert.deepStrictEqual(await sub.invoke('subscribe', url), [null]);
    for (let i = 0; i < 50; i++) {
        pub.call('publish', { n: i }, { url, method: 'create' }, () => {});
        try {
            await sub.next((m) => m.name === 'created', { timeoutMs: 200 });
            return;
        } catch {
            // Redis subscriptions take a moment after (re)connecting
        }
    }
    assert.fail('a publish never crossed Redis');
}

function assertNoSecret(d, text, where) {
    assert.ok(!text.includes(PLAIN) && !text.includes(PASSWORD), `the password is in ${where}`);
}

test('requirepass and an ACL user: AUTH on every connection, again after a restart', { skip },
    async (t) => {
        const redis = await startRedis({
            args: ['--requirepass', PLAIN, '--user', 'dnoded', 'on', '>acl-pw', '~*', '&*', '+@all'],
            auth: `:${PASSWORD}`,
        });
        t.after(() => redis.close());
        for (const url of [redis.url, `redis://dnoded:acl-pw@127.0.0.1:${redis.port}`]) {
            const d = await startDnoded({ redisUrl: url, config: { workers: 2 } }, t);
            await crossWorker(t, d);
            const metrics = await httpGet(d.port, '/metrics');
            assertNoSecret(d, metrics.body.toString(), '/metrics');
            if (url === redis.url) {
                // Redis goes away and comes back: dnoded authenticates again.
                const since = d.stderr().length;
                await redis.stop({ sig: 'SIGKILL' });
                await new Promise((r) => setTimeout(r, 1500));
                await redis.start();
                await d.waitForLog(/Redis is back/, { since, timeoutMs: 20000 });
                await crossWorker(t, d);
            }
            assertNoSecret(d, d.stderr(), 'the log');
            await d.close();
        }
    });

test('a wrong password is a clear error in the log, never the password itself', { skip },
    async (t) => {
        const redis = await startRedis({ args: ['--requirepass', PLAIN], auth: `:${PASSWORD}` });
        t.after(() => redis.close());
        const wrong = `redis://:not-the-${PASSWORD}@127.0.0.1:${redis.port}`;
        const d = await startDnoded({ redisUrl: wrong, config: { workers: 1 } }, t);
        const line = await d.waitForLog(/Redis refused AUTH/);
        assert.match(line, /check the credentials in redis_url/);
        assertNoSecret(d, d.stderr(), 'the log');
        assert.ok(!d.stderr().includes('not-the-'), 'nor the wrong one');
        // dnoded -r says it too
        const r = spawnSync(d.bin, ['-c', d.configPath, '-r', 'sub=x'], { encoding: 'utf8' });
        assert.strictEqual(r.status, 1);
        assert.match(r.stderr, /Redis refused AUTH/);
        assert.ok(!r.stderr.includes('not-the-'));
        // and so does dnoded -t, which tries the credentials as the workers will
        const checked = spawnSync(d.bin, ['-c', d.configPath, '-t'], { encoding: 'utf8' });
        assert.strictEqual(checked.status, 1, checked.stderr);
        assert.match(checked.stderr, /redis_url: Redis refused AUTH/);
        assert.doesNotMatch(checked.stdout, /are ok/);
        assert.ok(!checked.stderr.includes('not-the-') && !checked.stderr.includes(PLAIN));
        fs.writeFileSync(d.configPath, fs.readFileSync(d.configPath, 'utf8')
            .replace(/^redis_url = .*$/m, `redis_url = ${redis.url}`));
        const right = spawnSync(d.bin, ['-c', d.configPath, '-t'], { encoding: 'utf8' });
        assert.strictEqual(right.status, 0, right.stderr);
        await d.close();

        // A malformed URL with a password in it: the config error does not echo it.
        const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'dnoded-rauth-'));
        t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
        const conf = path.join(dir, 'dnoded.conf');
        fs.writeFileSync(conf, `listen = 127.0.0.1:1\nredis_url = redis://user@${PLAIN}\n`);
        fs.writeFileSync(path.join(dir, 'models.json'), '{}');
        const c = spawnSync(d.bin, ['-c', conf, '-t'], { encoding: 'utf8' });
        assert.strictEqual(c.status, 1);
        assert.match(c.stderr, /redis_url.*not shown/);
        assert.ok(!c.stderr.includes(PLAIN));
        // and a config that holds a password and every user can read is warned about
        fs.writeFileSync(conf, `listen = 127.0.0.1:1\nredis_url = redis://:x@127.0.0.1:1\n`);
        fs.chmodSync(conf, 0o644);
        const w = spawnSync(d.bin, ['-c', conf, '-t'], { encoding: 'utf8' });
        assert.match(w.stderr, /holds a secret and every user can read it/);
        fs.chmodSync(conf, 0o640);
        const q = spawnSync(d.bin, ['-c', conf, '-t'], { encoding: 'utf8' });
        assert.doesNotMatch(q.stderr, /every user can read it/);
        // a Redis that is down now is no error of the file: a warning
        assert.strictEqual(q.status, 0, q.stderr);
        assert.match(q.stderr, /warning: redis_url not checked: cannot reach Redis at 127\.0\.0\.1:1/);
        assert.match(q.stdout, /are ok/, 'the file itself is fine');
    });
