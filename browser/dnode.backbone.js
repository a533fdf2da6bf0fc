/* dnode.backbone.js: Backbone persistence and live updates through dnoded,
 * on top of dnode.js. Needs Backbone 1.6 and underscore 1.13 (jQuery is not
 * needed). It provides:
 *
 *   BackboneDNode(options)   DNode middleware; options.pubsub (false): when
 *                            true, changes are published to every subscriber
 *                            of the model's url, otherwise only the caller hears;
 *                            options.idAttribute ('_id'): set as Backbone's
 *                            default idAttribute (false leaves it alone);
 *                            options.token: a function returning the session's
 *                            token (or a promise of it), asked on every
 *                            (re)connection and again when the server says
 *                            authExpiring; a refused refresh triggers
 *                            "dnode:auth-error" on Backbone
 *   _.sync                   a Backbone sync over DNode: set `sync: _.sync` on
 *                            a model or collection, or Backbone.sync = _.sync
 *   type, url                on models and collections: the server's model type
 *                            and the channel (a model uses its collection's url)
 *   fetch({query, sorting, fields})   read with a filter, sort/limit/skip, projection
 *   finished(model, resp, options)    called after Backbone's own success handling
 *   error(model, err, options)        Backbone's error callback gets the server's
 *                                     {name, message, errors} object
 *   subscribe([options], [callback]) / unsubscribe(...)  on collections and models
 *   events "subscribe" / "unsubscribe" (online, url)     presence on the channel
 *   Backbone events "dnode:reconnect", "dnode:down", and "dnode:refetch"
 *   (url) when a channel's changes could not be replayed and its
 *   collections are read again
 *
 * Pushes update what is subscribed in place: created adds (or completes our
 * own pending create), updated sets, deleted removes and triggers destroy.
 * Each channel's position (the epoch and offset of the last change seen)
 * is kept; after a reconnection every channel is subscribed again from
 * there and the server replays what was missed. Only when it says the
 * history no longer has it (recovered: false) are the channel's
 * collections fetched again with their last options. Writes that were
 * waiting for their answer when the connection dropped are sent again
 * with the same request id, which the server answers once. */
(function (root) {
    'use strict';

    var Backbone = root.Backbone;
    var _ = root._;

    if (!Backbone || !_) {
        throw new Error('dnode.backbone.js needs Backbone and underscore loaded first');
    }

    var clientId = 'c' + Math.random().toString(36).slice(2) + Date.now().toString(36);
    var state = {
        conn: null,
        options: { pubsub: false },
        channels: {},   /* url -> [collection or model, ...] */
        pending: [],    /* operations waiting for their reply */
        positions: {},  /* url -> {epoch, offset}: the last change seen */
        connectedOnce: false
    };
    var requestSeq = 0;

    function channelOf(obj) {
        if (obj instanceof Backbone.Collection) {
            return _.result(obj, 'url');
        }
        if (obj.collection) {
            var u = _.result(obj.collection, 'url');
            if (u) {
                return u;
            }
        }
        return _.result(obj, 'urlRoot') || _.result(obj, 'url');
    }

    function typeOf(obj) {
        return _.result(obj, 'type') || (obj.collection && _.result(obj.collection, 'type')) ||
            (obj.model && obj.model.prototype && obj.model.prototype.type);
    }

    function idOf(doc) {
        return doc && (doc._id !== undefined ? doc._id : doc.id);
    }

    function needConnection() {
        if (!state.conn) {
            throw new Error('dnode.backbone.js: no connection; use ' +
                'DNode().use(BackboneDNode(options)).connect(...) first');
        }
        return state.conn;
    }

    /* ---------------------------------------------------------------- sync */

    function sync(method, model, options) {
        options = options || {};
        var conn = needConnection();
        var isCollection = model instanceof Backbone.Collection;
        var opt = { type: typeOf(model), url: channelOf(model), client: clientId };
        var data = null;
        var op = { sent: false, done: false };
        var touched = null;

        if (!state.options.pubsub || options.broadcast === false) {
            opt.silent = true;
        }
        if (model.cid) {
            opt.cid = model.cid;
        }
        switch (method) {
        case 'read':
            if (isCollection) {
                _.each(['query', 'sorting', 'fields'], function (k) {
                    if (options[k] !== undefined) {
                        opt[k] = options[k];
                    }
                });
                model._dnodeLastRead = _.pick(options, 'query', 'sorting', 'fields');
                touched = {};
                (model._dnodeReads = model._dnodeReads || []).push(touched);
            } else {
                opt.query = { _id: model.id };
                if (options.fields !== undefined) {
                    opt.fields = options.fields;
                }
            }
            break;
        case 'create':
            data = _.omit(options.attrs || model.toJSON(options), '_id');
            opt.requestId = clientId + '.' + (++requestSeq);
            break;
        case 'update':
        case 'patch':
            data = _.extend({}, options.attrs || model.toJSON(options), { _id: model.id });
            method = 'update';
            opt.requestId = clientId + '.' + (++requestSeq);
            break;
        case 'delete':
            data = { _id: model.id };
            if (model.has && model.has('__v')) {
                data.__v = model.get('__v');
            }
            opt.requestId = clientId + '.' + (++requestSeq);
            break;
        default:
            throw new Error('dnode.backbone.js: unknown sync method ' + method);
        }

        function finish() {
            op.done = true;
            state.pending = _.without(state.pending, op);
            conn.release(onReply);
            conn.release(onError);
        }
        function onError(err) {
            if (op.done) {
                return;
            }
            finish();
            if (touched) {
                model._dnodeReads = _.without(model._dnodeReads || [], touched);
            }
            if (options.error) {
                options.error(err);
            }
        }
        function onReply(doc) {
            if (op.done) {
                return;
            }
            finish();
            if (touched) {
                doc = mergeTouched(model, touched, doc);
            }
            if (options.success) {
                options.success(doc);
            }
            if (options.finished) {
                options.finished.call(options.context, model, doc, options);
            }
        }
        opt.error = onError;
        op.fail = onError;
        var args = method === 'read' ? [opt, onReply] : [data, opt, onReply];
        /* A write lost with its connection goes again on the next one: its
         * request id makes the server answer it once. */
        op.retry = opt.requestId ? function () {
            op.sent = conn.call.apply(conn, [method].concat(args));
        } : null;
        state.pending.push(op);
        model.trigger('request', model, null, options);
        op.sent = conn.call.apply(conn, [method].concat(args));
        return op;
    }

    /* ------------------------------------------------------------- pushes */

    /* A collection read races with pushes: a change pushed while the read
     * was in flight is newer than what the read saw. So the answer loses
     * the documents pushed meanwhile, and gets the models they made
     * instead, before Backbone sets it (a fetch would otherwise undo them).
     * Models not saved yet (a create on its way) stay as well. */
    function mergeTouched(col, touched, docs) {
        col._dnodeReads = _.without(col._dnodeReads || [], touched);
        if (!_.isArray(docs)) {
            return docs;
        }
        var out = _.reject(docs, function (d) { return _.has(touched, String(idOf(d))); });
        _.each(touched, function (kind, id) {
            var m = col.get(id);
            if (kind !== 'deleted' && m) {
                out.push(m);
            }
        });
        return out.concat(col.filter(function (m) { return m.isNew(); }));
    }

    function findIn(col, doc, opt) {
        var found = col.get(doc) || col.get(idOf(doc));
        if (!found && opt && opt.client === clientId && opt.cid) {
            /* Our own create, published before its reply reached us. */
            found = col.get(opt.cid);
        }
        return found;
    }

    function applyToCollection(col, kind, doc, opt) {
        var found = findIn(col, doc, opt);
        _.each(col._dnodeReads || [], function (touched) {
            touched[String(idOf(doc))] = kind;
        });
        if (kind === 'deleted') {
            if (found) {
                found.trigger('destroy', found, found.collection, opt);
            }
        } else if (found) {
            found.set(found.parse(doc, {}), { dnode: opt });
        } else {
            col.add(doc, { parse: true, merge: true, dnode: opt });
        }
    }

    function applyToModel(model, kind, doc, opt) {
        var mine = opt && opt.client === clientId && opt.cid === model.cid;
        if (!mine && (model.isNew() || String(model.id) !== String(idOf(doc)))) {
            return;
        }
        if (kind === 'deleted') {
            model.trigger('destroy', model, model.collection, opt);
        } else {
            model.set(model.parse(doc, {}), { dnode: opt });
        }
    }

    /* Remember the newest place seen in url's history. */
    function seen(url, info) {
        if (!url || !info || typeof info.epoch !== 'string' || typeof info.offset !== 'number') {
            return;
        }
        var pos = state.positions[url];
        if (!pos || pos.epoch !== info.epoch || info.offset > pos.offset) {
            state.positions[url] = { epoch: info.epoch, offset: info.offset };
        }
    }

    /* Read url's collections again, with their last options. */
    function refetch(url) {
        _.each((state.channels[url] || []).slice(), function (obj) {
            if (obj instanceof Backbone.Collection && obj._dnodeLastRead) {
                obj.fetch(_.clone(obj._dnodeLastRead));
            }
        });
    }

    /* The server lost changes on url for us: read again. */
    function lost(url, info) {
        if (info && typeof info.epoch === 'string') {
            state.positions[url] = { epoch: info.epoch, offset: info.offset };
        }
        refetch(url);
        Backbone.trigger('dnode:refetch', url);
    }

    function push(kind, doc, opt) {
        if (opt && opt.url) {
            seen(opt.url, opt);
        }
        var list = opt && state.channels[opt.url];
        if (!list || !doc || typeof doc !== 'object') {
            return;
        }
        _.each(list.slice(), function (obj) {
            if (obj instanceof Backbone.Collection) {
                applyToCollection(obj, kind, doc, opt);
            } else {
                applyToModel(obj, kind, doc, opt);
            }
        });
    }

    function presence(event, url, online) {
        _.each((state.channels[url] || []).slice(), function (obj) {
            obj.online = online;
            obj.trigger(event, online, url);
        });
    }

    /* ---------------------------------------------------------- subscribe */

    /* (options, callback), (callback) or (options) with finished/error. */
    function subscription(join) {
        return function (options, callback) {
            var self = this;
            if (typeof options === 'function') {
                callback = options;
                options = {};
            }
            options = options || {};
            var url = channelOf(this);
            var list = state.channels[url] || (state.channels[url] = []);
            if (join && !_.contains(list, this)) {
                list.push(this);
            } else if (!join) {
                state.channels[url] = _.without(list, this);
                if (state.channels[url].length === 0) {
                    delete state.channels[url];
                }
            }
            var conn = needConnection();
            var reply = function (err, info) {
                conn.release(reply); /* answered once: the id can go */
                if (join && !err && !state.positions[url]) {
                    seen(url, info);
                }
                if (err) {
                    if (options.error) {
                        options.error.call(options.context, self, err, options);
                    }
                    self.trigger('error', self, err, options);
                } else if (options.finished) {
                    options.finished.call(options.context, self, null, options);
                }
                if (callback) {
                    callback.call(options.context, err || null, self);
                }
            };
            if (join) {
                conn.call('subscribe', url, {}, reply);
            } else {
                delete state.positions[url];
                conn.call('unsubscribe', url, reply);
            }
            return this;
        };
    }

    _.each([Backbone.Collection.prototype, Backbone.Model.prototype], function (proto) {
        proto.subscribe = subscription(true);
        proto.unsubscribe = subscription(false);
    });

    /* ------------------------------------------------------- reconnection */

    function onReady() {
        _.each(state.pending, function (op) {
            op.sent = true; /* queued calls go out right after this event */
        });
        if (!state.connectedOnce) {
            state.connectedOnce = true;
            return;
        }
        _.each(_.keys(state.channels), function (url) {
            var since = state.positions[url];
            var reply = function (err, info) {
                state.conn.release(reply);
                if (err || !info || !info.recovered) {
                    /* Not all of it is in the history (or an older server):
                     * start over from the answer and read again. */
                    delete state.positions[url];
                    seen(url, info);
                    refetch(url);
                } else {
                    seen(url, info);
                }
            };
            state.conn.call('subscribe', url, since ? { since: since } : {}, reply);
        });
        /* After the subscriptions: a write's first attempt may be among
         * the replayed changes. */
        _.each(state.retry || [], function (op) {
            if (!op.done) {
                op.retry();
            }
        });
        state.retry = [];
        Backbone.trigger('dnode:reconnect');
    }

    function onDown() {
        var cut = _.filter(state.pending, function (op) { return op.sent; });
        state.retry = state.retry || [];
        var closed = state.conn && state.conn._closed; /* closed for good: nothing comes back */
        _.each(cut, function (op) {
            if (op.retry && !closed) {
                op.sent = false;
                state.retry.push(op);
            } else {
                op.fail({ name: 'Unavailable', message: 'connection lost before the server answered' });
            }
        });
        Backbone.trigger('dnode:down');
    }

    /* The server says the token expires in `seconds`: ask the provider for
     * a fresh one and present it (same sub). */
    function refreshToken(seconds) {
        var provider = state.options.token;
        var conn = state.conn;
        if (!provider || !conn) {
            return;
        }
        var present = function (tok) {
            var reply = function (err) {
                conn.release(reply);
                if (err) {
                    Backbone.trigger('dnode:auth-error', err);
                }
            };
            conn.call('auth', String(tok), reply);
        };
        Promise.resolve().then(provider).then(present, function (err) {
            Backbone.trigger('dnode:auth-error', { name: 'Unauthorized',
                message: 'token provider failed: ' + (err && err.message), expiresIn: seconds });
        });
    }

    function BackboneDNode(options) {
        state.options = _.extend({ pubsub: false, idAttribute: '_id' }, options);
        if (state.options.idAttribute) {
            Backbone.Model.prototype.idAttribute = state.options.idAttribute;
        }
        return function (remote, conn) {
            state.conn = conn;
            if (state.options.token) {
                conn.tokenProvider = state.options.token;
                if (conn.options && !conn.options.token) {
                    conn.options.token = state.options.token;
                }
            }
            this.authExpiring = refreshToken;
            this.created = function (doc, opt) { push('created', doc, opt); };
            this.updated = function (doc, opt) { push('updated', doc, opt); };
            this.deleted = function (doc, opt) { push('deleted', doc, opt); };
            this.subscribed = function (url, online) { presence('subscribe', url, online); };
            this.unsubscribed = function (url, online) { presence('unsubscribe', url, online); };
            this.recovered = function (url, info) {
                if (!info || !info.recovered) {
                    lost(url, info);
                }
            };
            this.error = function (err) { Backbone.trigger('dnode:error', err); };
            conn.on('ready', onReady);
            conn.on('down', onDown);
        };
    }

    BackboneDNode.clientId = clientId;
    BackboneDNode.sync = sync;
    _.mixin({ sync: sync });
    root.BackboneDNode = BackboneDNode;
})(typeof window !== 'undefined' ? window : this);
