'use strict';
// tls: a throwaway certificate authority for TLS tests, made with the
// openssl program in a test's directory: a CA, then server certificates it
// signs for localhost and 127.0.0.1. Clients trust the CA (never a disabled
// check); each certificate has its own serial, so a test can tell which one
// a server presents.

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { findProgram } = require('./proc');

function openssl(args, cwd) {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

function haveOpenssl() {
    return Boolean(findProgram('openssl'));
}

// A CA in dir: { dir, caPath, ca (PEM text), issue(name, {days}) }.
// issue writes name.pem and name.key (an EC P-256 key, mode 0600) for
// localhost and 127.0.0.1, valid for days (90), and returns { cert, key, serial } (serial as openssl
// prints it, upper-case hex).
function makeCA(dir) {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '365', '-subj', '/CN=dnoded test CA'], dir);
    fs.writeFileSync(path.join(dir, 'san.ext'),
        'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
    let next = 0x1000 + Math.floor(Math.random() * 0x1000);
    return {
        dir,
        caPath: path.join(dir, 'ca.pem'),
        ca: fs.readFileSync(path.join(dir, 'ca.pem')),
        issue(name, { days = 90 } = {}) {
            const serial = (next++).toString(16).toUpperCase();
            openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
            openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key',
                '-set_serial', `0x${serial}`, '-out', `${name}.pem`, '-days', String(days),
                '-extfile', 'san.ext'], dir);
            fs.chmodSync(path.join(dir, `${name}.key`), 0o600);
            return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`),
                serial, name };
        },
    };
}

module.exports = { makeCA, haveOpenssl };
