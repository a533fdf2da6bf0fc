'use strict';
// node_dnode_server: the Node.js reference of bench/run. An in-memory
// pub/sub server on the npm dnode package (1.2.2, {weak: false}) with the
// subscribe/unsubscribe/publish semantics of dnoded's API: fn(null) or
// fn('missing parameters'), presence pushed as subscribed(url, online) /
// unsubscribed(url, online) to the channel's subscribers that export them,
// publish fanned out as created/updated/deleted with the options' callbacks
// removed. No persistence, one process.
//
//   node bench/node_dnode_server.js PORT    prints "listening PORT", runs
//                                           until SIGTERM or SIGINT
// Not part of the daemon or the tests.

const path = require('node:path');
const dnode = require(path.join(__dirname, '..', 'node_modules', 'dnode'));

const PAST = { create: 'created', update: 'updated', delete: 'deleted' };
const MAX_URL = 1024;

const channels = new Map(); // url -> Set of sessions, in join order

function validUrl(url) {
    return typeof url === 'string' && url.length > 0 && url.length <= MAX_URL &&
        !url.includes('\0');
}

function reply(fn, value) {
    if (typeof fn === 'function') {
        fn(value);
    }
}

// Tell the channel's subscribers how many sessions are on it now.
function presence(url, set, event) {
    for (const s of set) {
        if (typeof s.remote[event] === 'function') {
            s.remote[event](url, set.size);
        }
    }
}

function join(session, url) {
    if (session.subs.has(url)) {
        return;
    }
    let set = channels.get(url);
    if (set === undefined) {
        set = new Set();
        channels.set(url, set);
    }
    set.add(session);
    session.subs.add(url);
    presence(url, set, 'subscribed');
}

function leave(session, url) {
    const set = channels.get(url);
    if (!session.subs.delete(url) || set === undefined) {
        return;
    }
    set.delete(session);
    presence(url, set, 'unsubscribed');
    if (set.size === 0) {
        channels.delete(url);
    }
}

// What a subscriber receives as opt: the publisher's options, callbacks removed.
function withoutCallbacks(value) {
    if (typeof value === 'function') {
        return undefined;
    }
    if (Array.isArray(value)) {
        return value.filter((v) => typeof v !== 'function').map(withoutCallbacks);
    }
    if (value !== null && typeof value === 'object') {
        const out = {};
        for (const [k, v] of Object.entries(value)) {
            if (typeof v !== 'function') {
                out[k] = withoutCallbacks(v);
            }
        }
        return out;
    }
    return value;
}

function main() {
    const port = Number(process.argv[2]);
    if (!Number.isInteger(port) || port <= 0) {
        process.stderr.write('usage: node bench/node_dnode_server.js PORT\n');
        process.exit(2);
    }
    const server = dnode(function (remote, conn) {
        const session = { remote, subs: new Set() };
        conn.on('end', () => {
            for (const url of [...session.subs]) {
                leave(session, url);
            }
        });
        conn.on('error', () => {});
        this.subscribe = (url, fn) => {
            if (!validUrl(url)) {
                reply(fn, 'missing parameters');
                return;
            }
            join(session, url);
            reply(fn, null);
        };
        this.unsubscribe = (url, fn) => {
            if (!validUrl(url)) {
                reply(fn, 'missing parameters');
                return;
            }
            leave(session, url);
            reply(fn, null);
        };
        this.publish = (model, opt, fn) => {
            const event = opt !== null && typeof opt === 'object' ? PAST[opt.method] : undefined;
            if (model === undefined || event === undefined || !validUrl(opt.url)) {
                reply(fn, 'missing parameters');
                return;
            }
            const set = channels.get(opt.url);
            if (set !== undefined) {
                const doc = withoutCallbacks(model);
                const pushed = withoutCallbacks(opt);
                for (const s of set) {
                    if (typeof s.remote[event] === 'function') {
                        s.remote[event](doc, pushed);
                    }
                }
            }
            reply(fn, null);
        };
    }, { weak: false });
    const listener = server.listen(port, '127.0.0.1', () => {
        process.stdout.write(`listening ${port}\n`);
    });
    listener.on('error', (err) => {
        process.stderr.write(`node_dnode_server: ${err.message}\n`);
        process.exit(1);
    });
    const stop = () => process.exit(0);
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

main();
