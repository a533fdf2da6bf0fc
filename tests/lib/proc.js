'use strict';
// proc: process plumbing shared by the test libraries: free ports, TCP
// probes, polling with deadlines, and long-running children (servers,
// dnoded) started in process groups of their own that cannot outlive the
// test process. It knows nothing about what it runs.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

// Sanitized binaries run several times slower; every deadline is scaled.
const timeScale = process.env.DNODED_SANITIZED ? 3 : 1;

function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

// Ports come from below the kernel's ephemeral range (32768 and up here), so
// that neither outgoing connections nor bind(0) elsewhere take them, and are
// reserved for the life of this process by a file in a directory shared by
// all test processes. Without that, a test that stops a server and starts it
// again on the same port can find the port taken by a server of a test file
// running in parallel, and talk to the wrong server.
const PORT_MIN = 20000;
const PORT_MAX = 32000;
const PORT_DIR = path.join(require('node:os').tmpdir(), 'dnoded-test-ports');
const reservedPorts = new Set();

function pidAlive(pid) {
    try {
        process.kill(pid, 0);
        return true;
    } catch (err) {
        return err.code === 'EPERM';
    }
}

// Claims port for this process; false if a live process holds it.
function reservePort(port) {
    const file = path.join(PORT_DIR, String(port));
    for (let i = 0; i < 2; i++) {
        try {
            fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
            reservedPorts.add(port);
            return true;
        } catch (err) {
            if (err.code !== 'EEXIST') {
                throw err;
            }
        }
        const owner = Number(fs.readFileSync(file, 'utf8'));
        if (owner && pidAlive(owner)) {
            return false;
        }
        fs.rmSync(file, { force: true }); // stale: its process is gone
    }
    return false;
}

function releasePort(port) {
    reservedPorts.delete(port);
    fs.rmSync(path.join(PORT_DIR, String(port)), { force: true });
}

process.on('exit', () => {
    for (const port of reservedPorts) {
        try {
            fs.rmSync(path.join(PORT_DIR, String(port)), { force: true });
        } catch (err) {
            // nothing to do at exit
        }
    }
});

function canBind(port, host) {
    return new Promise((resolve) => {
        const srv = net.createServer();
        srv.unref();
        srv.once('error', () => resolve(false));
        srv.listen(port, host, () => srv.close(() => resolve(true)));
    });
}

// A loopback TCP port that nobody listens on and no other test process
// holds; it stays this process's until it exits.
async function freePort(host = '127.0.0.1') {
    fs.mkdirSync(PORT_DIR, { recursive: true, mode: 0o1777 });
    for (let i = 0; i < 500; i++) {
        const port = PORT_MIN + Math.floor(Math.random() * (PORT_MAX - PORT_MIN));
        if (reservedPorts.has(port) || !reservePort(port)) {
            continue;
        }
        if (await canBind(port, host)) {
            return port;
        }
        releasePort(port);
    }
    throw new Error(`no free port in ${PORT_MIN}-${PORT_MAX - 1}`);
}

// Resolves true once a TCP connection to host:port succeeds within
// timeoutMs, false if it is refused or times out. Never rejects.
function tcpProbe(port, host = '127.0.0.1', timeoutMs = 1000) {
    return new Promise((resolve) => {
        const sock = net.connect({ port, host });
        const done = (ok) => {
            clearTimeout(timer);
            sock.destroy();
            resolve(ok);
        };
        const timer = setTimeout(() => done(false), timeoutMs);
        sock.once('connect', () => done(true));
        sock.once('error', () => done(false));
    });
}

// Calls fn() every intervalMs until it returns a truthy value, which is
// returned. Rejects with "timed out waiting for <what>" after timeoutMs, or
// at once when abort() (optional) returns a string: the reason to give up.
async function waitFor(fn, { timeoutMs = 10000, intervalMs = 50, what = 'condition',
    abort = null } = {}) {
    const deadline = Date.now() + timeoutMs;
    let lastError = null;
    for (;;) {
        if (abort) {
            const reason = abort();
            if (reason) {
                throw new Error(`gave up waiting for ${what}: ${reason}`);
            }
        }
        try {
            const v = await fn();
            if (v) {
                return v;
            }
        } catch (err) {
            lastError = err;
        }
        if (Date.now() >= deadline) {
            const why = lastError ? ` (last error: ${lastError.message})` : '';
            throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
        }
        await sleep(intervalMs);
    }
}

// ------------------------------------------------------------------ reaper
// A detached helper holds the read end of a pipe from us and SIGKILLs every
// process group we registered once the pipe closes, which happens however we
// exit, SIGKILL included. Groups are registered when spawned and removed
// once they are known to be empty.

const REAPER_SOURCE = `
const groups = new Set();
let buf = '';
process.on('SIGINT', () => {});
process.on('SIGHUP', () => {});
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const pid = Number(line.slice(1));
        if (line[0] === '+') groups.add(pid); else groups.delete(pid);
    }
});
const reap = () => {
    for (const g of groups) {
        try { process.kill(-g, 'SIGKILL'); } catch (e) { /* already gone */ }
    }
    process.exit(0);
};
process.stdin.on('end', reap);
process.stdin.on('error', reap);
`;

let reaper = null;
const liveGroups = new Set();

function reaperSend(line) {
    if (!reaper) {
        reaper = spawn(process.execPath, ['-e', REAPER_SOURCE], {
            detached: true,
            stdio: ['pipe', 'ignore', 'ignore'],
        });
        reaper.on('error', () => {});
        reaper.stdin.on('error', () => {});
        reaper.unref();
        reaper.stdin.unref();
    }
    reaper.stdin.write(line + '\n');
}

process.on('exit', () => {
    for (const pgid of liveGroups) {
        try {
            process.kill(-pgid, 'SIGKILL');
        } catch (err) {
            // already gone
        }
    }
});

// Pids of live (non-zombie) processes in process group pgid, from /proc.
function groupMembers(pgid) {
    const out = [];
    let names;
    try {
        names = fs.readdirSync('/proc');
    } catch (err) {
        return out;
    }
    for (const name of names) {
        if (!/^\d+$/.test(name)) {
            continue;
        }
        let stat;
        try {
            stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
        } catch (err) {
            continue;
        }
        // pid (comm) state ppid pgrp ...; comm may contain spaces and parens.
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') {
            out.push(Number(name));
        }
    }
    return out;
}

function signalGroup(pgid, sig) {
    try {
        process.kill(-pgid, sig);
        return true;
    } catch (err) {
        return false;
    }
}

// Starts cmd as the leader of a new process group with stdout and stderr
// appended to logPath. Resolves with a handle once the process exists:
//   pid, exited (Promise of {code, signal}), exitStatus (null while running),
//   signal(sig), killGroup(sig), members(), forget().
// Rejects when the program cannot be started (ENOENT, EACCES, ...).
async function spawnGroup(cmd, args, { logPath, env = process.env, cwd } = {}) {
    fs.mkdirSync(path.dirname(logPath), { recursive: true });
    const fd = fs.openSync(logPath, 'a');
    let child;
    try {
        child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd], env, cwd });
    } finally {
        fs.closeSync(fd);
    }
    const started = new Promise((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
    });
    await started;
    const pid = child.pid;
    liveGroups.add(pid);
    reaperSend('+' + pid);

    const handle = {
        pid,
        exitStatus: null,
        exited: null,
        signal(sig) {
            if (handle.exitStatus) {
                return false;
            }
            try {
                process.kill(pid, sig);
                return true;
            } catch (err) {
                return false;
            }
        },
        killGroup(sig) {
            return signalGroup(pid, sig);
        },
        members() {
            return groupMembers(pid);
        },
        // Stop watching the group: call once it is known to be empty.
        forget() {
            liveGroups.delete(pid);
            reaperSend('-' + pid);
        },
    };
    handle.exited = new Promise((resolve) => {
        child.once('exit', (code, signal) => {
            handle.exitStatus = { code, signal };
            resolve(handle.exitStatus);
        });
    });
    return handle;
}

// Stops a spawnGroup() handle: sig to the leader, then SIGKILL to the whole
// group after timeoutMs. Afterwards every member of the group is gone.
// Resolves { code, signal, killed, leftovers }: killed is true when SIGKILL
// was needed, leftovers lists pids still in the group after the leader
// exited (they are killed too).
async function stopGroup(handle, { sig = 'SIGTERM', timeoutMs = 10000 } = {}) {
    let killed = false;
    if (!handle.exitStatus) {
        handle.signal(sig);
        let timer;
        const deadline = new Promise((resolve) => {
            timer = setTimeout(() => resolve('timeout'), timeoutMs);
        });
        const first = await Promise.race([handle.exited, deadline]);
        clearTimeout(timer);
        if (first === 'timeout') {
            killed = true;
            handle.killGroup('SIGKILL');
        }
    }
    const status = await handle.exited;
    // Children of the leader get a moment to notice it is gone.
    let leftovers = [];
    for (let i = 0; i < 40; i++) {
        leftovers = handle.members();
        if (leftovers.length === 0) {
            break;
        }
        await sleep(50);
    }
    if (leftovers.length > 0) {
        handle.killGroup('SIGKILL');
        await waitFor(() => handle.members().length === 0, {
            timeoutMs: 5000, what: `process group ${handle.pid} to die`,
        }).catch(() => {});
    }
    handle.forget();
    return { code: status.code, signal: status.signal, killed, leftovers };
}

// Absolute path of an executable named name: $envVar when set, else PATH
// plus the usual sbin directories. null when not found.
function findProgram(name, envVar) {
    if (envVar && process.env[envVar]) {
        return process.env[envVar];
    }
    const dirs = (process.env.PATH || '').split(':').filter(Boolean);
    dirs.push('/usr/local/bin', '/usr/local/sbin', '/usr/bin', '/usr/sbin');
    for (const dir of dirs) {
        const p = path.join(dir, name);
        try {
            fs.accessSync(p, fs.constants.X_OK);
            return p;
        } catch (err) {
            // keep looking
        }
    }
    return null;
}

// The last n lines of a text file ('' when it cannot be read).
function tail(file, n = 30) {
    let text;
    try {
        text = fs.readFileSync(file, 'utf8');
    } catch (err) {
        return '';
    }
    return text.split('\n').slice(-n - 1).join('\n');
}

module.exports = {
    timeScale,
    sleep,
    freePort,
    tcpProbe,
    waitFor,
    spawnGroup,
    stopGroup,
    findProgram,
    tail,
    groupMembers,
};
