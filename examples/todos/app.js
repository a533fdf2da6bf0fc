/* todos: a TodoMVC-style list kept in MongoDB by dnoded and synchronised
 * live between every open page. Backbone models and a collection persist
 * through dnode.backbone.js; the view is plain DOM code (no jQuery), keyed
 * by model so that live updates never disturb a todo being edited.
 * Who the page is comes from a token in its URL (?token=...; scripts/run
 * prints development ones): each person sees their own todos and the
 * shared ones, as models.json's rules say; without a token, the shared
 * list only, read-only. */
(function () {
    'use strict';

    var ENTER = 13;
    var ESCAPE = 27;

    var Todo = Backbone.Model.extend({
        type: 'todo',
        idAttribute: '_id',
        sync: _.sync,
        defaults: { title: '', completed: false, order: 0, shared: false },

        toggle: function () {
            this.save({ completed: !this.get('completed') }, { patch: true });
        }
    });

    var Todos = Backbone.Collection.extend({
        model: Todo,
        type: 'todo',
        url: 'todos',
        sync: _.sync,
        comparator: 'order',

        completed: function () {
            return this.where({ completed: true });
        },
        remaining: function () {
            return this.where({ completed: false });
        },
        nextOrder: function () {
            return this.length ? (this.max(function (t) { return t.get('order'); })
                .get('order') || 0) + 1 : 1;
        }
    });

    var todos = new Todos();
    var $ = function (sel) { return document.querySelector(sel); };
    var list = $('.todo-list');
    var items = {}; /* model cid -> li */
    var filter = 'all';

    function showProblem(text) {
        var p = $('.problem');
        p.textContent = text || '';
        p.hidden = !text;
    }

    function visible(todo) {
        return filter === 'all' || (filter === 'completed') === todo.get('completed');
    }

    function makeItem(todo) {
        var li = document.createElement('li');
        li.innerHTML = '<div class="view"><input class="toggle" type="checkbox">' +
            '<label></label><button class="share" title="Share or unshare"></button>' +
            '<button class="destroy" title="Delete"></button></div>' +
            '<input class="edit">';
        li.querySelector('.share').addEventListener('click', function () {
            todo.save({ shared: !todo.get('shared') }, { patch: true });
        });
        li.querySelector('.toggle').addEventListener('change', function () {
            todo.toggle();
        });
        li.querySelector('.destroy').addEventListener('click', function () {
            todo.destroy();
        });
        li.querySelector('label').addEventListener('dblclick', function () {
            var input = li.querySelector('.edit');
            li.classList.add('editing');
            input.value = todo.get('title');
            input.focus();
        });
        var edit = li.querySelector('.edit');
        var finish = function (keep) {
            if (!li.classList.contains('editing')) {
                return;
            }
            li.classList.remove('editing');
            var title = edit.value.trim();
            if (!keep) {
                return;
            }
            if (!title) {
                todo.destroy();
            } else if (title !== todo.get('title')) {
                todo.save({ title: title }, { patch: true });
            }
            paint(todo);
        };
        edit.addEventListener('keydown', function (e) {
            if (e.which === ENTER || e.keyCode === ENTER) {
                finish(true);
            } else if (e.which === ESCAPE || e.keyCode === ESCAPE) {
                finish(false);
            }
        });
        edit.addEventListener('blur', function () { finish(true); });
        return li;
    }

    function paint(todo) {
        var li = items[todo.cid];
        if (!li) {
            return;
        }
        if (todo.id) {
            li.setAttribute('data-id', todo.id);
        }
        li.classList.toggle('completed', !!todo.get('completed'));
        li.classList.toggle('shared', !!todo.get('shared'));
        li.querySelector('.share').textContent = todo.get('shared') ? 'shared' : 'share';
        li.querySelector('.share').hidden = !me || todo.get('owner') !== me;
        li.querySelector('.toggle').checked = !!todo.get('completed');
        li.querySelector('label').textContent = todo.get('title');
        li.hidden = !visible(todo);
    }

    /* Put the list in collection order, creating and dropping items as
     * needed; an item being edited keeps its element. */
    function render() {
        var seen = {};
        todos.each(function (todo) {
            var li = items[todo.cid] || (items[todo.cid] = makeItem(todo));
            seen[todo.cid] = true;
            paint(todo);
            list.appendChild(li); /* moves it into order */
        });
        _.each(_.keys(items), function (cid) {
            if (!seen[cid]) {
                items[cid].remove();
                delete items[cid];
            }
        });
        var left = todos.remaining().length;
        var done = todos.length - left;
        $('.main').hidden = todos.length === 0;
        $('.footer').hidden = todos.length === 0;
        $('.toggle-all').checked = todos.length > 0 && left === 0;
        $('.todo-count').innerHTML = '<strong>' + left + '</strong> ' +
            (left === 1 ? 'item' : 'items') + ' left';
        $('.clear-completed').hidden = done === 0;
        _.each(document.querySelectorAll('.filters a'), function (a) {
            a.classList.toggle('selected', a.getAttribute('href') === '#/' +
                (filter === 'all' ? '' : filter));
        });
    }

    var renderSoon = _.debounce(render, 0);
    todos.on('add remove reset sort update change', renderSoon);
    todos.on('error', function (model, err) {
        showProblem((err && (err.message || err.name)) || 'the server refused the change');
    });
    todos.on('subscribe unsubscribe', function (online) {
        $('.online-count').textContent = online;
        $('.online-label').textContent = online === 1 ? 'person' : 'people';
    });

    $('.new-todo').addEventListener('keydown', function (e) {
        var title = this.value.trim();
        if ((e.which === ENTER || e.keyCode === ENTER) && title) {
            todos.create({ title: title, order: todos.nextOrder(), completed: false,
                shared: $('.new-shared').checked }, { wait: !me });
            this.value = '';
        }
    });
    $('.toggle-all').addEventListener('change', function () {
        var completed = this.checked;
        todos.each(function (todo) {
            if (todo.get('completed') !== completed) {
                todo.save({ completed: completed }, { patch: true });
            }
        });
    });
    $('.clear-completed').addEventListener('click', function () {
        _.invoke(todos.completed(), 'destroy');
    });

    function route() {
        var m = /^#\/(active|completed)?$/.exec(location.hash || '#/');
        filter = (m && m[1]) || 'all';
        render();
    }
    window.addEventListener('hashchange', route);
    route();

    function status(state, text) {
        document.body.setAttribute('data-dnode', state);
        $('.status').textContent = text;
    }

    /* The token: from the URL once, then kept for this tab's reloads. */
    var token = (/[?&]token=([^&#]+)/.exec(location.search) || [])[1];
    token = token ? decodeURIComponent(token) : sessionStorage.getItem('dnoded-token');
    var me = null;
    if (token) {
        sessionStorage.setItem('dnoded-token', token);
        try {
            me = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub;
        } catch (err) {
            me = null;
        }
        $('.who').textContent = 'signed in as ' + me;
    }
    document.body.setAttribute('data-user', me || '');

    var conn = DNode().use(BackboneDNode({
        pubsub: true,
        token: token ? function () { return token; } : null
    }));
    conn.on('ready', function () {
        status('ready', 'connected');
        showProblem('');
    });
    conn.on('down', function () { status('down', 'reconnecting…'); });
    conn.connect(function () {
        todos.subscribe({
            error: function (c, err) { showProblem('cannot subscribe: ' + err); }
        }, function (err) {
            if (!err) {
                todos.fetch({ sorting: { sort: [['order', 1]] } });
            }
        });
    });

    /* For the browser tests and the curious. */
    window.todoApp = { todos: todos, conn: conn };
})();
