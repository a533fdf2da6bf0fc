'use strict';
// The todos example in a real browser: Debian's chromium driven by
// playwright-core, two browser contexts (two people, ann and bob, each with
// a token in the page's URL) on one dnoded backed by a real
// MongoDB-compatible server. On the shared list, what one adds, edits,
// toggles and deletes shows in the other; a reload shows what was stored;
// dnoded stopped and started again: both pages reconnect by themselves and
// keep syncing. Each one's own todos stay theirs: never shown to the
// other, nor to an anonymous page, which sees the shared list only and
// cannot add to it. A page from an origin neither in allowed_origins nor
// under one of server_names cannot open the socket. The same page loaded
// over https from the TLS listener (a CA made by the test and trusted by
// chromium's certificate store) syncs over wss:// with a plain one.
// Propagation times are reported as diagnostics, not asserted.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { startDnoded } = require('../lib/harness');
const { getServices, startRedis } = require('../lib/services');
const { findProgram, freePort, timeScale } = require('../lib/proc');
const jwt = require('../lib/jwt');
const { makeCA, haveOpenssl } = require('../lib/tls');

const SECRET = require('node:crypto').randomBytes(32).toString('hex');
const tokenFor = (sub) => jwt.sign(jwt.claims({ sub }), SECRET);

const CHROMIUM = process.env.DNODED_TEST_CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 15000 * timeScale; // generous: a bound, not a goal
const srcdir = process.env.DNODED_SRCDIR || path.join(__dirname, '..', '..');

let playwright = null;
try {
    playwright = require('playwright-core');
} catch (err) {
    playwright = null;
}

const skip = !fs.existsSync(CHROMIUM) ? `no chromium at ${CHROMIUM}`
    : !playwright ? 'playwright-core is not installed (scripts/setup)'
        : !(process.env.DNODED_TEST_MONGODB_URI || findProgram('ferretdb', 'DNODED_TEST_FERRETDB'))
            ? 'needs ferretdb (scripts/setup) or DNODED_TEST_MONGODB_URI' : false;

let services;
let d;
let browser;
let profile;
let port;
let tlsPort = null; // the TLS listener, when the test CA could be made and trusted

// The test CA, trusted by chromium through the NSS database under its HOME
// (as a system would install a CA): never a disabled certificate check.
function trustTestCA(home) {
    if (!haveOpenssl() || !findProgram('certutil')) {
        return null;
    }
    const { execFileSync } = require('node:child_process');
    const ca = makeCA(fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-e2e-ca-')));
    const db = path.join(home, '.pki', 'nssdb');
    fs.mkdirSync(db, { recursive: true });
    execFileSync('certutil', ['-N', '--empty-password', '-d', `sql:${db}`]);
    execFileSync('certutil', ['-A', '-d', `sql:${db}`, '-n', 'dnoded test CA', '-t', 'C,,',
        '-i', ca.caPath]);
    return ca;
}
let ca = null;

test.before(async () => {
    if (skip) {
        return;
    }
    services = await getServices({ redis: false });
    port = await freePort();
    profile = fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-chromium-'));
    ca = trustTestCA(profile);
    const issued = ca ? ca.issue('server') : null;
    tlsPort = ca ? await freePort() : null;
    const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dnoded-e2e-key-'));
    fs.writeFileSync(path.join(keyDir, 'token.key'), SECRET);
    d = await startDnoded({
        services,
        port,
        modelsPath: path.join(srcdir, 'examples', 'todos', 'models.json'),
        config: {
            docroot: path.join(srcdir, 'examples', 'todos'),
            allowed_origins: `http://127.0.0.1:${port}`,
            // The server answers as 127.0.0.1 only: a page under another
            // name of the same machine (localhost) is another origin.
            server_names: '127.0.0.1',
            auth_key: path.join(keyDir, 'token.key'),
            ...(ca ? { listen_tls: `127.0.0.1:${tlsPort}`, tls_certificate: issued.cert,
                tls_certificate_key: issued.key } : {}),
        },
    });
    // playwright gives every launch a fresh profile of its own; ours only
    // keeps chromium from touching the user's.
    browser = await playwright.chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync'],
        env: { ...process.env, HOME: profile, XDG_CONFIG_HOME: profile, XDG_CACHE_HOME: profile },
        timeout: 60000 * timeScale,
    });
});

test.after(async () => {
    try {
        if (browser) {
            await browser.close();
        }
        if (d) {
            await d.close();
        }
    } finally {
        if (services) {
            await services.close();
        }
        if (profile) {
            fs.rmSync(profile, { recursive: true, force: true });
        }
        if (ca) {
            fs.rmSync(ca.dir, { recursive: true, force: true });
        }
    }
});

// A page in a context of its own, as who (a sub; null: anonymous).
async function openPage(who = null, origin = `http://127.0.0.1:${port}`) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.errors = [];
    page.on('pageerror', (err) => page.errors.push(err));
    page.logs = [];
    page.on('console', (m) => page.logs.push(m.text()));
    await page.goto(`${origin}/${who ? `?token=${tokenFor(who)}` : ''}`);
    return page;
}

// Adds a todo from page, on the shared list or not.
async function add(page, title, shared) {
    await page.setChecked('.new-shared', shared);
    await page.fill('.new-todo', title);
    await page.press('.new-todo', 'Enter');
}

async function ready(page) {
    try {
        await page.waitForSelector('body[data-dnode="ready"]', { state: 'attached' });
    } catch (err) {
        err.message += `\npage status: ${await page.textContent('.status').catch(() => '?')}` +
            `\nconsole: ${page.logs.slice(-10).join('\n  ')}` +
            `\n--- dnoded ---\n${d.stderr().split('\n').slice(-15).join('\n')}`;
        throw err;
    }
}

function titles(page) {
    return page.$$eval('.todo-list li:not([hidden]) label', (ls) => ls.map((l) => l.textContent));
}

// Waits until pred(page) holds (polling in node); resolves with the time it took.
async function eventually(page, pred, what) {
    const start = Date.now();
    for (;;) {
        if (await pred(page)) {
            return Date.now() - start;
        }
        if (Date.now() - start > WAIT_MS) {
            assert.fail(`${what}: not seen within ${WAIT_MS} ms; page shows ` +
                `${JSON.stringify(await titles(page))}`);
        }
        await new Promise((r) => setTimeout(r, 20));
    }
}

const hasTitles = (want) => async (page) =>
    JSON.stringify(await titles(page)) === JSON.stringify(want);

function item(page, title) {
    return page.locator('.todo-list li', { has: page.locator('label', { hasText: title }) });
}

test('two people edit the same list live, across a reload and a restart',
    { skip }, async (t) => {
        const a = await openPage('ann');
        const b = await openPage('bob');
        await Promise.all([ready(a), ready(b)]);
        assert.strictEqual(await a.textContent('.who'), 'signed in as ann');
        const times = {};

        // Both see each other online.
        await eventually(a, async (p) => (await p.textContent('.online-count')) === '2',
            'two people online (a)');
        await eventually(b, async (p) => (await p.textContent('.online-count')) === '2',
            'two people online (b)');

        // Add in A to the shared list, seen in B.
        await add(a, 'buy milk', true);
        await add(a, 'write tests', true);
        times.add = await eventually(b, hasTitles(['buy milk', 'write tests']), 'add');
        assert.strictEqual((await b.textContent('.todo-count')).trim(), '2 items left');

        // Edit in B, seen in A.
        await item(b, 'buy milk').locator('label').dblclick();
        await item(b, 'buy milk').locator('.edit').fill('buy oat milk');
        await item(b, 'buy milk').locator('.edit').press('Enter');
        times.edit = await eventually(a, hasTitles(['buy oat milk', 'write tests']), 'edit');

        // Toggle in A, seen in B.
        await item(a, 'write tests').locator('.toggle').check();
        times.toggle = await eventually(b, async (p) =>
            (await item(p, 'write tests').getAttribute('class') || '').includes('completed'),
        'toggle');
        assert.strictEqual((await b.textContent('.todo-count')).trim(), '1 item left');

        // Delete in B, seen in A.
        await item(b, 'buy oat milk').hover();
        await item(b, 'buy oat milk').locator('.destroy').click();
        times.delete = await eventually(a, hasTitles(['write tests']), 'delete');

        // Clear completed in A, seen in B.
        await add(a, 'stay', true);
        await eventually(b, hasTitles(['write tests', 'stay']), 'add before clearing');
        await a.click('.clear-completed');
        times.clear = await eventually(b, hasTitles(['stay']), 'clear completed');

        // A reload shows what the server stored.
        await a.reload();
        await ready(a);
        await eventually(a, hasTitles(['stay']), 'the stored list after a reload');
        const stored = await a.evaluate(() => window.todoApp.todos.map((m) => m.id));
        assert.strictEqual(stored.length, 1);
        assert.match(stored[0], /^[0-9a-f]{24}$/);

        // dnoded goes away and comes back: both pages reconnect by themselves.
        await d.stop();
        await Promise.all([
            a.waitForSelector('body[data-dnode="down"]'),
            b.waitForSelector('body[data-dnode="down"]'),
        ]);
        await d.start();
        await Promise.all([ready(a), ready(b)]);
        await add(b, 'after the restart', true);
        times.afterRestart = await eventually(a, hasTitles(['stay', 'after the restart']),
            'sync after the restart');
        await item(a, 'stay').locator('.toggle').check();
        await eventually(b, async (p) =>
            (await item(p, 'stay').getAttribute('class') || '').includes('completed'),
        'toggle after the restart');
        await eventually(b, async (p) => (await p.textContent('.online-count')) === '2',
            'two people online again');

        assert.deepStrictEqual(a.errors.concat(b.errors), []);
        t.diagnostic(`propagation ms: ${JSON.stringify(times)}`);
        await a.context().close();
        await b.context().close();
    });

test('the page over https syncs over wss:// with a page over plain http', { skip }, async (t) => {
    if (!tlsPort) {
        t.skip('needs the openssl and certutil programs (scripts/setup)');
        return;
    }
    const secure = await openPage('ann', `https://127.0.0.1:${tlsPort}`);
    const sockets = [];
    secure.on('websocket', (ws) => sockets.push(ws.url()));
    await secure.reload(); // so the socket it opens is seen
    const plain = await openPage('bob');
    await Promise.all([ready(secure), ready(plain)]);
    assert.strictEqual(await secure.evaluate(() => location.protocol), 'https:');
    assert.ok(sockets.length > 0 && sockets.every((u) => u.startsWith(`wss://127.0.0.1:${tlsPort}/`)),
        `the https page's sockets: ${sockets.join(', ')}`);
    const stamp = Date.now();
    await add(secure, `from https ${stamp}`, true);
    await eventually(plain, async (p) => (await titles(p)).includes(`from https ${stamp}`),
        'a todo added over https, on the plain page');
    await add(plain, `from http ${stamp}`, true);
    await eventually(secure, async (p) => (await titles(p)).includes(`from http ${stamp}`),
        'a todo added over http, on the https page');
    assert.deepStrictEqual(secure.errors, []);
    await secure.context().close();
    await plain.context().close();
});

test('a page cut off by its server and back gets every change made meanwhile, without a read',
    { skip: skip || (findProgram('redis-server', 'DNODED_TEST_REDIS_SERVER') ? false
        : 'needs redis-server (scripts/setup)') }, async (t) => {
        // Two hosts on one Redis and one database: ann's page on the first,
        // bob's on the second. The first stops (closing its sockets) while
        // bob changes the list, then starts again.
        const redis = await startRedis();
        t.after(() => redis.close());
        const host = async () => {
            const p = await freePort();
            return startDnoded({
                mongodbUri: services.mongodbUri, redisUrl: redis.url, port: p,
                modelsPath: path.join(srcdir, 'examples', 'todos', 'models.json'),
                config: { docroot: path.join(srcdir, 'examples', 'todos'),
                    server_names: '127.0.0.1', auth_key: d.opts.config.auth_key },
            }, t);
        };
        const [h1, h2] = [await host(), await host()];
        const counting = async (who, h) => {
            const context = await browser.newContext();
            const page = await context.newPage();
            page.setDefaultTimeout(WAIT_MS);
            page.errors = [];
            page.on('pageerror', (err) => page.errors.push(err));
            // What the page sends: the methods it calls, by name or id.
            await page.addInitScript(() => {
                window.sentCalls = [];
                const send = WebSocket.prototype.send;
                WebSocket.prototype.send = function (data) {
                    try {
                        const m = JSON.parse(data);
                        window.sentCalls.push({ method: m.method, args: m.arguments });
                    } catch (err) {
                        window.sentCalls.push({ method: '?' });
                    }
                    return send.call(this, data);
                };
            });
            await page.goto(`http://127.0.0.1:${h.port}/?token=${tokenFor(who)}`);
            return page;
        };
        const a = await counting('ann', h1);
        const b = await counting('bob', h2);
        await Promise.all([ready(a), ready(b)]);
        const stamp = Date.now();
        await add(a, `before ${stamp}`, true);
        await eventually(b, async (p) => (await titles(p)).includes(`before ${stamp}`),
            'the first todo on both pages');

        await h1.stop();
        await a.waitForSelector('body[data-dnode="down"]');
        const sentBefore = await a.evaluate(() => window.sentCalls.length);
        await add(b, `while away 1 ${stamp}`, true);
        await add(b, `while away 2 ${stamp}`, true);
        await item(b, `before ${stamp}`).locator('.toggle').check();
        await eventually(b, async (p) => (await titles(p)).includes(`while away 2 ${stamp}`),
            'bob\'s changes on his own page');
        await h1.start();
        await ready(a);
        const took = await eventually(a, async (p) => {
            const ts = await titles(p);
            return ts.includes(`while away 1 ${stamp}`) && ts.includes(`while away 2 ${stamp}`) &&
                (await item(p, `before ${stamp}`).getAttribute('class') || '').includes('completed');
        }, 'every change made while the page was cut off');
        // Read is the server's method 1 (its methods message lists create,
        // read, ...); the page asked to recover, and read nothing.
        const sent = (await a.evaluate(() => window.sentCalls)).slice(sentBefore);
        assert.ok(sent.some((m) => ['4', 'subscribe'].includes(String(m.method)) &&
            m.args[1] && m.args[1].since), `a subscribe with since: ${JSON.stringify(sent)}`);
        assert.deepStrictEqual(sent.filter((m) => ['1', 'read'].includes(String(m.method))), [],
            'no read after the reconnection');
        assert.deepStrictEqual(a.errors.concat(b.errors), []);
        t.diagnostic(`caught up ${took} ms after the page was ready again`);
        await a.context().close();
        await b.context().close();
    });

test('a page from an origin neither allowed nor under server_names cannot open the socket',
    { skip }, async () => {
        // Same server, other origin: localhost instead of 127.0.0.1.
        const page = await openPage(null, `http://localhost:${port}`);
        const outcome = await page.evaluate((p) => new Promise((resolve) => {
            const ws = new WebSocket(`ws://localhost:${p}/dnode`);
            ws.onopen = () => resolve('open');
            ws.onerror = () => resolve('refused');
        }), port);
        assert.strictEqual(outcome, 'refused');
        const state = await page.getAttribute('body', 'data-dnode');
        assert.notStrictEqual(state, 'ready');
        assert.match(d.stderr(), /WebSocket from origin 'http:\/\/localhost:\d+' refused/);
        await page.context().close();
    });

test('each person sees their own todos and the shared ones; an anonymous page the shared list only',
    { skip }, async (t) => {
        const ann = await openPage('ann');
        const bob = await openPage('bob');
        const anon = await openPage(null);
        await Promise.all([ready(ann), ready(bob), ready(anon)]);
        const stamp = Date.now();
        const mine = `ann private ${stamp}`;
        const ours = `ann shared ${stamp}`;
        const his = `bob private ${stamp}`;
        await add(ann, mine, false);
        await add(ann, ours, true);
        await add(bob, his, false);
        const shows = (title, yes) => async (p) => (await titles(p)).includes(title) === yes;
        await eventually(ann, shows(mine, true), 'ann sees her own');
        await eventually(bob, shows(ours, true), 'bob sees the shared one');
        await eventually(anon, shows(ours, true), 'an anonymous page sees the shared one');
        await eventually(bob, shows(his, true), 'bob sees his own');
        // Time enough for a push that should not happen.
        await new Promise((r) => setTimeout(r, 500));
        assert.ok(!(await titles(bob)).includes(mine), 'ann\'s todo never reaches bob');
        assert.ok(!(await titles(anon)).includes(mine), 'nor an anonymous page');
        assert.ok(!(await titles(ann)).includes(his), 'bob\'s todo never reaches ann');
        // Unsharing takes it out of bob's view live (a deleted push for him).
        await item(ann, ours).locator('.share').click();
        await eventually(bob, shows(ours, false), 'unshared: gone from bob\'s page');
        await eventually(anon, shows(ours, false), 'unshared: gone from the anonymous page');
        // A reload of bob's page: still not there (the read rule, not only pushes).
        await bob.reload();
        await ready(bob);
        await eventually(bob, shows(his, true), 'bob\'s own after a reload');
        assert.ok(!(await titles(bob)).includes(ours));
        // The anonymous page cannot add: the server says Forbidden.
        await add(anon, `anon ${stamp}`, true);
        await anon.waitForSelector('.problem:not([hidden])');
        assert.match(await anon.textContent('.problem'), /needs a token|not allowed/);
        assert.ok(!(await titles(anon)).includes(`anon ${stamp}`));
        assert.deepStrictEqual(ann.errors.concat(bob.errors, anon.errors), []);
        for (const p of [ann, bob, anon]) {
            await p.context().close();
        }
        t.diagnostic('private todos stayed private; shared ones reached everyone');
    });
