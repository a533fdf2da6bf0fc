/* fuzz_http: libFuzzer target for the HTTP side of the DNode port: a real
 * session (fuzz_conn.h) receives the input as one connection's bytes, in
 * fragments: request parsing with keep-alive and pipelining, path decoding
 * and the docroot checks, /healthz, /metrics, and upgrades to WebSocket
 * (whatever follows an upgrade is read as frames).
 *
 * Input: byte 0 bit 0 makes the worker a stopping one (503s, drain), bit 1
 * makes the client a slow reader; bytes 1-2 seed the fragment sizes; the
 * rest is the byte stream. Checks: every answer is HTTP/1.1, nothing
 * outside the docroot or hidden is served, and the session is gone once
 * the connection ends. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_conn.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_conn_init();
    return 0;
}

static int contains(struct evbuffer *b, const char *what)
{
    struct evbuffer_ptr p = evbuffer_search(b, what, strlen(what), NULL);

    return p.pos >= 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_conn_t c;
    unsigned char head[9];

    if (size < 3)
        return 0;
    fuzz_conn_begin(&c, data[0] & 1, (data[0] & 2) ? 512 : 0);
    fuzz_conn_send_pieces(&c, data + 3, size - 3, (uint32_t)data[1] << 8 | data[2], 128);
    fuzz_conn_read_all(&c);
    fuzz_conn_dump(&c);
    if (evbuffer_get_length(c.received) > 0) {
        if (evbuffer_copyout(c.received, head, sizeof(head)) != (ssize_t)sizeof(head) ||
            memcmp(head, "HTTP/1.1 ", 9) != 0)
            abort();
    }
    /* /etc through the "out" symlink, or the hidden file. */
    if (contains(c.received, "root:x:") || contains(c.received, "secret\n"))
        abort();
    fuzz_conn_end(&c);
    return 0;
}
