'use strict';
// The service layer every integration test stands on: private Redis and
// FerretDB servers start on free ports and answer, keep their data across
// stop/start, leave no process behind, and getServices() defers to the
// DNODED_TEST_* variables instead of starting its own.

const test = require('node:test');
const assert = require('node:assert');

const {
    startRedis, startFerretDB, getServices, uniqueDbName,
} = require('../lib/services');
const { RedisConnection, redisCommand } = require('../lib/redis');
const { MongoConnection, parseUri, withDatabase } = require('../lib/mongo');
const { findProgram, tcpProbe } = require('../lib/proc');

const noRedis = findProgram('redis-server', 'DNODED_TEST_REDIS_SERVER')
    ? false : 'redis-server not installed (scripts/setup)';
const noFerret = findProgram('ferretdb', 'DNODED_TEST_FERRETDB')
    ? false : 'ferretdb not installed (scripts/setup)';

test('a private Redis answers PING and carries pub/sub', { skip: noRedis }, async (t) => {
    const redis = await startRedis();
    t.after(() => redis.close());
    assert.match(redis.url, /^redis:\/\/127\.0\.0\.1:\d+$/);
    assert.strictEqual(await redisCommand(redis.url, 'PING'), 'PONG');

    const sub = await RedisConnection.connect(redis.url);
    t.after(() => sub.close());
    assert.deepStrictEqual(await sub.command('SUBSCRIBE', '/todos'), ['subscribe', '/todos', 1]);
    assert.strictEqual(await redisCommand(redis.url, 'PUBLISH', '/todos', '{"a":1}'), 1);
    assert.deepStrictEqual(await sub.nextMessage(), ['message', '/todos', '{"a":1}']);
});

test('a stopped Redis refuses connections and answers again after start',
    { skip: noRedis }, async (t) => {
        const redis = await startRedis();
        t.after(() => redis.close());
        const pid = redis.proc.pid;
        await redis.stop();
        assert.strictEqual(await tcpProbe(redis.port), false);
        assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
        await redis.start();
        assert.strictEqual(await redisCommand(redis.url, 'PING'), 'PONG');
    });

test('a private FerretDB answers ping and stores documents across a restart',
    { skip: noFerret }, async (t) => {
        const ferret = await startFerretDB();
        t.after(() => ferret.close());
        const uri = withDatabase(ferret.uri, uniqueDbName('services'));
        let conn = await MongoConnection.connect(uri);
        assert.strictEqual(await conn.ping(), true);
        await conn.insert('todos', [{ title: 'write the harness', done: false, order: 3 }]);
        conn.close();

        await ferret.stop();
        assert.strictEqual(await tcpProbe(ferret.port), false);
        await ferret.start();

        conn = await MongoConnection.connect(uri);
        const docs = await conn.find('todos', { done: false });
        conn.close();
        assert.strictEqual(docs.length, 1);
        assert.strictEqual(docs[0].title, 'write the harness');
        assert.strictEqual(docs[0].order, 3);
        assert.match(String(docs[0]._id), /^[0-9a-f]{24}$/);
    });

test('getServices uses DNODED_TEST_* servers when set and starts none',
    { skip: noRedis || noFerret }, async (t) => {
        const redis = await startRedis();
        t.after(() => redis.close());
        const ferret = await startFerretDB();
        t.after(() => ferret.close());
        const saved = {
            mongo: process.env.DNODED_TEST_MONGODB_URI,
            redis: process.env.DNODED_TEST_REDIS_URL,
        };
        t.after(() => {
            for (const [k, v] of [['DNODED_TEST_MONGODB_URI', saved.mongo],
                ['DNODED_TEST_REDIS_URL', saved.redis]]) {
                if (v === undefined) {
                    delete process.env[k];
                } else {
                    process.env[k] = v;
                }
            }
        });
        process.env.DNODED_TEST_MONGODB_URI = `${ferret.uri}/ignored?appname=x`;
        process.env.DNODED_TEST_REDIS_URL = redis.url;

        const svc = await getServices();
        t.after(() => svc.close());
        assert.strictEqual(svc.skip, null);
        assert.strictEqual(svc.mongo, null);
        assert.strictEqual(svc.redis, null);
        assert.strictEqual(svc.redisUrl, redis.url);
        const parsed = parseUri(svc.mongodbUri);
        assert.strictEqual(parsed.port, ferret.port);
        assert.match(parsed.db, /^t_[A-Za-z0-9_]+_[0-9a-f]{8}$/);
        assert.ok(svc.mongodbUri.endsWith('?appname=x'));
        assert.strictEqual(await redisCommand(svc.redisUrl, 'PING'), 'PONG');
        const conn = await MongoConnection.connect(svc.mongodbUri);
        assert.strictEqual(await conn.ping(), true);
        conn.close();
    });

test('getServices starts private servers and close() stops them',
    { skip: noRedis || noFerret }, async (t) => {
        const saved = {
            mongo: process.env.DNODED_TEST_MONGODB_URI,
            redis: process.env.DNODED_TEST_REDIS_URL,
        };
        delete process.env.DNODED_TEST_MONGODB_URI;
        delete process.env.DNODED_TEST_REDIS_URL;
        t.after(() => {
            if (saved.mongo !== undefined) {
                process.env.DNODED_TEST_MONGODB_URI = saved.mongo;
            }
            if (saved.redis !== undefined) {
                process.env.DNODED_TEST_REDIS_URL = saved.redis;
            }
        });
        const svc = await getServices();
        t.after(() => svc.close());
        assert.ok(svc.mongo && svc.redis, 'both servers were started');
        const pids = [svc.mongo.proc.pid, svc.redis.proc.pid];
        assert.strictEqual(await redisCommand(svc.redisUrl, 'PING'), 'PONG');
        const conn = await MongoConnection.connect(svc.mongodbUri);
        assert.strictEqual(await conn.ping(), true);
        conn.close();

        await svc.close();
        for (const pid of pids) {
            assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `pid ${pid} is gone`);
        }
    });
