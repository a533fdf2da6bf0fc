/* dnode.js: the DNode protocol in the browser, over a WebSocket to dnoded's
 * /dnode. No dependencies. It exchanges methods, passes callbacks at any
 * depth of the arguments, encodes repeated and cyclic references as links,
 * honours and sends cull, and reconnects with backoff and jitter: after
 * each reconnection the methods are exchanged again and the "ready" event
 * fires, so that layers above (dnode.backbone.js) resubscribe.
 *
 *   var client = DNode({ hello: function (name, cb) { cb('hi ' + name); } });
 *   client.use(function (remote, conn) { this.extra = ...; });   // middleware
 *   client.connect(function (remote, conn) { remote.read({type: 'todo'}, show); });
 *   client.call('read', {type: 'todo'}, show);   // queued while disconnected
 *
 * Events (client.on(name, fn)): "remote" (remote) and "ready" () on every
 * methods exchange, "up" and "down" for the socket, "reconnect" (attempt,
 * delay), "error" (err) for a throwing local method, "fail" (err) for a
 * request the client cannot honour, "end" after close(). */
(function (root) {
    'use strict';

    var hasOwn = Object.prototype.hasOwnProperty;

    function isPlainContainer(v) {
        return v !== null && typeof v === 'object';
    }

    function defaultUrl() {
        var loc = root.location;
        return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + '/dnode';
    }

    /* A minimal event emitter. */
    function Emitter() {
        this._events = {};
    }
    Emitter.prototype.on = function (name, fn) {
        (this._events[name] = this._events[name] || []).push(fn);
        return this;
    };
    Emitter.prototype.off = function (name, fn) {
        var list = this._events[name] || [];
        for (var i = list.length - 1; i >= 0; i--) {
            if (!fn || list[i] === fn) {
                list.splice(i, 1);
            }
        }
        return this;
    };
    Emitter.prototype.emit = function (name) {
        var list = (this._events[name] || []).slice();
        var args = Array.prototype.slice.call(arguments, 1);
        for (var i = 0; i < list.length; i++) {
            list[i].apply(this, args);
        }
        return list.length > 0;
    };

    /* Replace functions in args with "[Function]" (noting their ids and
     * paths) and repeated objects with links. Objects with a toJSON method
     * (dates, Backbone models) are sent as what it returns. */
    function scrub(args, idOf) {
        var callbacks = {};
        var links = [];
        var seen = [];   /* objects already written, with their paths */
        var stack = [];  /* objects on the current path (cycle detection) */

        function walk(value, path) {
            if (typeof value === 'function') {
                callbacks[idOf(value)] = path.slice();
                return '[Function]';
            }
            if (!isPlainContainer(value)) {
                return value;
            }
            if (typeof value.toJSON === 'function') {
                return walk(value.toJSON(), path);
            }
            for (var i = 0; i < seen.length; i++) {
                if (seen[i].obj === value) {
                    /* A repeat (a cycle when it is on the stack): a link. */
                    links.push({ from: seen[i].path.slice(), to: path.slice() });
                    return stack.indexOf(value) >= 0 ? '[Circular]' : null;
                }
            }
            seen.push({ obj: value, path: path.slice() });
            stack.push(value);
            var out;
            if (Array.isArray(value)) {
                out = [];
                for (var j = 0; j < value.length; j++) {
                    path.push(j);
                    out.push(walk(value[j], path));
                    path.pop();
                }
            } else {
                out = {};
                for (var key in value) {
                    if (hasOwn.call(value, key) && value[key] !== undefined) {
                        path.push(key);
                        out[key] = walk(value[key], path);
                        path.pop();
                    }
                }
            }
            stack.pop();
            return out;
        }

        var result = [];
        for (var k = 0; k < args.length; k++) {
            result.push(walk(args[k], [k]));
        }
        return { arguments: result, callbacks: callbacks, links: links };
    }

    function unsafeKey(key) {
        return key === '__proto__' || key === 'constructor' || key === 'prototype';
    }

    function getPath(obj, path) {
        for (var i = 0; i < path.length; i++) {
            if (!isPlainContainer(obj) || unsafeKey(String(path[i]))) {
                return undefined;
            }
            obj = obj[path[i]];
        }
        return obj;
    }

    function setPath(obj, path, value) {
        if (path.length === 0) {
            return false;
        }
        var parent = getPath(obj, path.slice(0, -1));
        var key = path[path.length - 1];
        if (!isPlainContainer(parent) || unsafeKey(String(key))) {
            return false;
        }
        parent[key] = value;
        return true;
    }

    function DNode(cons) {
        if (!(this instanceof DNode)) {
            return new DNode(cons);
        }
        Emitter.call(this);
        this.remote = {};
        this.instance = null;
        this._cons = cons;
        this._middleware = [];
        this._local = {};      /* our callback id -> function */
        this._ids = [];        /* [function, id] pairs, to reuse ids */
        this._nextId = 0;
        this._proxies = {};    /* remote callback id -> proxy function */
        this._queue = [];      /* calls made while not ready */
        this._ws = null;
        this._ready = false;
        this._closed = false;
        this._attempt = 0;
        this._timer = null;
        this.options = {};
    }
    DNode.prototype = Object.create(Emitter.prototype);
    DNode.prototype.constructor = DNode;

    /* Middleware runs once, before the first connection, with `this` the
     * exported instance: it adds the methods the server may call. */
    DNode.prototype.use = function (fn) {
        this._middleware.push(fn);
        return this;
    };

    /* connect([url], [options], [onReady]). options: reconnect (true),
     * minDelay (250 ms), maxDelay (10000 ms), token (a function returning a
     * token, or a promise of one, or null: asked again before every
     * connection, and sent in the URL so that the session is authenticated
     * before its first message). onReady(remote, client) runs on the first
     * methods exchange; listen to "ready" for every one. */
    DNode.prototype.connect = function () {
        var self = this;
        var url = null, options = {}, cb = null;
        for (var i = 0; i < arguments.length; i++) {
            var a = arguments[i];
            if (typeof a === 'string') {
                url = a;
            } else if (typeof a === 'function') {
                cb = a;
            } else if (isPlainContainer(a)) {
                options = a;
            }
        }
        this.url = url || options.url || defaultUrl();
        this.options = {
            reconnect: options.reconnect !== false,
            minDelay: options.minDelay || 250,
            maxDelay: options.maxDelay || 10000,
            token: typeof options.token === 'function' ? options.token : this.tokenProvider || null
        };
        if (this.instance === null) {
            if (typeof this._cons === 'function') {
                this.instance = new this._cons(this.remote, this);
            } else {
                this.instance = this._cons || {};
            }
            for (var m = 0; m < this._middleware.length; m++) {
                this._middleware[m].call(this.instance, this.remote, this);
            }
        }
        if (cb) {
            var first = function () {
                self.off('ready', first);
                cb.call(self, self.remote, self);
            };
            this.on('ready', first);
        }
        this._closed = false;
        this._open();
        return this;
    };

    /* The URL of the next connection: with a fresh token when there is a
     * provider. cb(url), or cb(null) when the provider failed. */
    DNode.prototype._urlWithToken = function (cb) {
        var self = this;
        var provider = this.options.token;
        if (!provider) {
            cb(this.url);
            return;
        }
        var done = function (tok) {
            if (tok === null || tok === undefined || tok === '') {
                cb(self.url);
                return;
            }
            cb(self.url + (self.url.indexOf('?') < 0 ? '?' : '&') + 'token=' +
                encodeURIComponent(String(tok)));
        };
        var fail = function (err) {
            self.emit('fail', err instanceof Error ? err : new Error('token provider failed'));
            cb(null);
        };
        var got;
        try {
            got = provider();
        } catch (err) {
            fail(err);
            return;
        }
        if (got && typeof got.then === 'function') {
            got.then(done, fail);
        } else {
            done(got);
        }
    };

    DNode.prototype._open = function () {
        var self = this;
        this._urlWithToken(function (url) {
            if (self._closed) {
                return;
            }
            if (url === null) {
                self._scheduleReconnect();
                return;
            }
            self._openUrl(url);
        });
    };

    DNode.prototype._openUrl = function (url) {
        var self = this;
        var ws;
        try {
            ws = new root.WebSocket(url);
        } catch (err) {
            this.emit('fail', err);
            this._scheduleReconnect();
            return;
        }
        this._ws = ws;
        ws.onopen = function () {
            self.emit('up');
            self._send({ method: 'methods' }, [self.instance]);
        };
        ws.onmessage = function (ev) {
            if (typeof ev.data !== 'string') {
                return;
            }
            var msg;
            try {
                msg = JSON.parse(ev.data);
            } catch (err) {
                self.emit('fail', new Error('unparsable message from the server'));
                return;
            }
            self._handle(msg);
        };
        ws.onclose = function (ev) {
            if (self._ws !== ws) {
                return;
            }
            self._ws = null;
            var wasReady = self._ready;
            self._ready = false;
            /* Callbacks the server held are void on a new connection. */
            self._proxies = {};
            self.emit('down', { code: ev.code, reason: ev.reason, wasReady: wasReady });
            if (!self._closed) {
                self._scheduleReconnect();
            }
        };
        ws.onerror = function () {
            /* onclose follows and handles it. */
        };
    };

    DNode.prototype._scheduleReconnect = function () {
        var self = this;
        if (this._closed || !this.options.reconnect || this._timer) {
            return;
        }
        var base = Math.min(this.options.maxDelay,
            this.options.minDelay * Math.pow(2, Math.min(this._attempt, 16)));
        /* Full jitter on the upper half: spread clients that lost the same server. */
        var delay = Math.round(base / 2 + Math.random() * base / 2);
        this._attempt++;
        this.emit('reconnect', this._attempt, delay);
        this._timer = setTimeout(function () {
            self._timer = null;
            if (!self._closed) {
                self._open();
            }
        }, delay);
    };

    /* Stop for good (no reconnection). */
    DNode.prototype.close = function () {
        this._closed = true;
        if (this._timer) {
            clearTimeout(this._timer);
            this._timer = null;
        }
        if (this._ws) {
            this._ws.close(1000);
        }
        this.emit('end');
    };

    DNode.prototype.isReady = function () {
        return this._ready;
    };

    DNode.prototype._idOf = function (fn) {
        for (var i = 0; i < this._ids.length; i++) {
            if (this._ids[i][0] === fn) {
                return this._ids[i][1];
            }
        }
        var id = this._nextId++;
        this._ids.push([fn, id]);
        this._local[id] = fn;
        return id;
    };

    /* Forget a local callback the server will not call again (frees it). */
    DNode.prototype.release = function (fn) {
        for (var i = 0; i < this._ids.length; i++) {
            if (this._ids[i][0] === fn) {
                delete this._local[this._ids[i][1]];
                this._ids.splice(i, 1);
                return true;
            }
        }
        return false;
    };

    /* Tell the server we will not call one of its callbacks again. */
    DNode.prototype.cull = function (proxy) {
        for (var id in this._proxies) {
            if (hasOwn.call(this._proxies, id) && this._proxies[id] === proxy) {
                delete this._proxies[id];
                this._raw({ method: 'cull', arguments: [Number(id)] });
                return true;
            }
        }
        return false;
    };

    DNode.prototype._raw = function (msg) {
        if (this._ws && this._ws.readyState === 1) {
            this._ws.send(JSON.stringify(msg));
            return true;
        }
        return false;
    };

    DNode.prototype._send = function (head, args) {
        var self = this;
        var s = scrub(args, function (fn) { return self._idOf(fn); });
        head.arguments = s.arguments;
        head.callbacks = s.callbacks;
        if (s.links.length > 0) {
            head.links = s.links;
        }
        return this._raw(head);
    };

    /* Call the server's method name with the arguments that follow; calls
     * made before the methods exchange (or while reconnecting) are queued. */
    DNode.prototype.call = function (name) {
        var args = Array.prototype.slice.call(arguments, 1);
        if (!this._ready) {
            this._queue.push([name, args]);
            return false;
        }
        var fn = this.remote[name];
        if (typeof fn !== 'function') {
            this.emit('fail', new Error('the server has no method ' + name));
            return false;
        }
        fn.apply(null, args);
        return true;
    };

    DNode.prototype._proxy = function (id) {
        var self = this;
        if (!this._proxies[id]) {
            this._proxies[id] = function () {
                self._send({ method: id }, Array.prototype.slice.call(arguments));
            };
        }
        return this._proxies[id];
    };

    DNode.prototype._handle = function (msg) {
        if (!isPlainContainer(msg)) {
            return;
        }
        var args = Array.isArray(msg.arguments) ? msg.arguments : [];
        var cbs = isPlainContainer(msg.callbacks) ? msg.callbacks : {};
        for (var sid in cbs) {
            if (hasOwn.call(cbs, sid) && Array.isArray(cbs[sid])) {
                setPath(args, cbs[sid], this._proxy(parseInt(sid, 10)));
            }
        }
        var links = Array.isArray(msg.links) ? msg.links : [];
        for (var l = 0; l < links.length; l++) {
            var link = links[l];
            if (link && Array.isArray(link.from) && Array.isArray(link.to)) {
                setPath(args, link.to, getPath(args, link.from));
            }
        }
        if (msg.method === 'methods') {
            this._takeMethods(args[0]);
        } else if (msg.method === 'cull') {
            for (var c = 0; c < args.length; c++) {
                var fn = this._local[args[c]];
                if (fn) {
                    this.release(fn);
                }
            }
        } else if (typeof msg.method === 'string') {
            var inst = this.instance || {};
            if (hasOwn.call(inst, msg.method) && typeof inst[msg.method] === 'function') {
                this._apply(inst[msg.method], args);
            } else {
                this.emit('fail', new Error('the server called an unknown method ' + msg.method));
            }
        } else if (typeof msg.method === 'number') {
            var local = this._local[msg.method];
            if (local) {
                this._apply(local, args);
            } else {
                this.emit('fail', new Error('the server called an unknown callback ' + msg.method));
            }
        }
    };

    DNode.prototype._apply = function (fn, args) {
        try {
            fn.apply(this.instance, args);
        } catch (err) {
            if (!this.emit('error', err)) {
                setTimeout(function () { throw err; }, 0);
            }
        }
    };

    DNode.prototype._takeMethods = function (methods) {
        var key;
        /* Keep the same remote object: callers may hold it. */
        for (key in this.remote) {
            if (hasOwn.call(this.remote, key)) {
                delete this.remote[key];
            }
        }
        if (isPlainContainer(methods)) {
            for (key in methods) {
                if (hasOwn.call(methods, key) && typeof methods[key] === 'function' &&
                    !unsafeKey(key)) {
                    this.remote[key] = methods[key];
                }
            }
        }
        this._ready = true;
        this._attempt = 0;
        this.emit('remote', this.remote);
        this.emit('ready');
        var queue = this._queue;
        this._queue = [];
        for (var i = 0; i < queue.length && this._ready; i++) {
            this.call.apply(this, [queue[i][0]].concat(queue[i][1]));
        }
    };

    DNode.scrub = scrub;
    root.DNode = DNode;
})(typeof window !== 'undefined' ? window : this);
