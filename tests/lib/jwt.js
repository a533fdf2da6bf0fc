'use strict';
// jwt: tokens for the tests, made with Node's crypto (not with dnoded's own
// code, so the tests check it against another implementation): HS256,
// RS256 and ES256, and the malformed and forged kinds an attacker sends.

const crypto = require('node:crypto');

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// A compact JWS of claims with header {alg, typ: 'JWT', ...extraHeader}.
// key: a secret (Buffer/string) for HS256, a private KeyObject or PEM for
// RS256/ES256; alg 'none' makes an unsigned token.
function sign(claims, key, alg = 'HS256', extraHeader = {}) {
    const head = b64url(JSON.stringify({ alg, typ: 'JWT', ...extraHeader }));
    const body = b64url(JSON.stringify(claims));
    const input = `${head}.${body}`;
    let sig;
    if (alg === 'none') {
        sig = Buffer.alloc(0);
    } else if (alg === 'HS256') {
        sig = crypto.createHmac('sha256', key).update(input).digest();
    } else if (alg === 'RS256') {
        sig = crypto.sign('sha256', Buffer.from(input), key);
    } else if (alg === 'ES256') {
        sig = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    } else {
        throw new Error(`no such alg ${alg}`);
    }
    return `${input}.${b64url(sig)}`;
}

// Seconds since the epoch.
const now = () => Math.floor(Date.now() / 1000);

// Claims valid for an hour from now, with more.
function claims(more = {}) {
    return { iat: now(), exp: now() + 3600, ...more };
}

module.exports = { sign, now, claims, b64url };
