/* fuzz_ws: libFuzzer target for WebSocket sessions: a real connection
 * (fuzz_conn.h) is upgraded with a valid handshake, then receives frames
 * built from the input: wslay's parsing as ws.c configures it (sizes,
 * masking, UTF-8, control frames, fragmentation, the max_message_size
 * check at the frame header), the close handshake, and DNode messages
 * through session and api (subscribe/publish in single-host mode).
 *
 * Input: byte 0 picks the mode (bit 0: raw bytes after the handshake
 * instead of frames; bit 1: a slow reader, so the output limits apply),
 * bytes 1-2 seed the fragment sizes. Frames are records: [b0 as sent: FIN,
 * RSV, opcode] [b1: bit 7 mask, bits 5-6 length form, bits 0-4 with the
 * next byte the payload length] [4 mask key bytes when
 * masked] [payload as the server should read it]; the target masks it.
 * Checks: the server's bytes are a 101 answer followed by whole, unmasked,
 * well-formed frames, and the session is gone once the connection ends. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_conn.h"

static const char HANDSHAKE[] = "GET /dnode HTTP/1.1\r\n"
                                "Host: fuzz\r\n"
                                "Upgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_conn_init();
    return 0;
}

/* Turn the records of in[0..len) into frames in out. */
static void build_frames(const uint8_t *in, size_t len, struct evbuffer *out)
{
    size_t i = 0;

    while (i + 3 <= len) {
        uint8_t b0 = in[i], b1 = in[i + 1], hdr[14], mask[4] = {0, 0, 0, 0};
        size_t plen = (size_t)(b1 & 0x1f) << 8 | in[i + 2], h = 2, k;
        int masked = (b1 & 0x80) != 0, form = (b1 >> 5) & 3;
        uint64_t announced;

        i += 3;
        if (masked) {
            if (i + 4 > len)
                break;
            memcpy(mask, in + i, 4);
            i += 4;
        }
        if (plen > len - i)
            plen = len - i;
        /* The length as announced: minimal, or a longer form than needed
         * (wslay must accept it), or a lie far past max_message_size. */
        announced = form == 3 ? (uint64_t)plen + ((uint64_t)1 << 20) : plen;
        hdr[0] = b0;
        if (form == 0 && announced < 126) {
            hdr[1] = (uint8_t)announced;
        } else if (form <= 1 && announced <= 0xffff) {
            hdr[1] = 126;
            hdr[2] = (uint8_t)(announced >> 8);
            hdr[3] = (uint8_t)announced;
            h = 4;
        } else {
            hdr[1] = 127;
            for (k = 0; k < 8; k++)
                hdr[2 + k] = (uint8_t)(announced >> (56 - 8 * k));
            h = 10;
        }
        if (masked) {
            hdr[1] |= 0x80;
            memcpy(hdr + h, mask, 4);
            h += 4;
        }
        if (evbuffer_add(out, hdr, h) < 0)
            abort();
        for (k = 0; k < plen; k++) {
            uint8_t ch = in[i + k] ^ mask[k % 4];
            if (evbuffer_add(out, &ch, 1) < 0)
                abort();
        }
        i += plen;
    }
}

/* What the server wrote: the 101 answer, then only complete frames of ours:
 * FIN set, no RSV bits, text, close, ping or pong, never masked. A server
 * that ended the session on its own said why: its last frame is a close. */
static void check_output(struct evbuffer *got, int server_closed)
{
    size_t len = evbuffer_get_length(got), i, h;
    const uint8_t *p;
    struct evbuffer_ptr end;
    int op = -1;

    if (len == 0)
        return;
    p = evbuffer_pullup(got, -1);
    if (len < 13 || memcmp(p, "HTTP/1.1 101 ", 13) != 0)
        abort();
    end = evbuffer_search(got, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        abort();
    for (i = (size_t)end.pos + 4; i < len; i += h) {
        uint64_t plen;

        if (len - i < 2)
            abort();
        op = p[i] & 0x0f;
        if ((p[i] & 0xf0) != 0x80 || (op != 1 && op != 8 && op != 9 && op != 10) ||
            (p[i + 1] & 0x80) != 0)
            abort();
        plen = p[i + 1] & 0x7f;
        h = 2;
        if (plen == 126) {
            if (len - i < 4)
                abort();
            plen = (uint64_t)p[i + 2] << 8 | p[i + 3];
            h = 4;
        } else if (plen == 127) {
            if (len - i < 10)
                abort();
            plen = 0;
            for (int k = 0; k < 8; k++)
                plen = plen << 8 | p[i + 2 + k];
            h = 10;
        }
        if ((op & 8) && plen > 125)
            abort(); /* control frames are short */
        if (plen > len - i - h)
            abort(); /* a frame cut short */
        h += (size_t)plen;
    }
    if (server_closed && op != 8)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct evbuffer *stream;
    fuzz_conn_t c;
    size_t total;
    const uint8_t *bytes;

    if (size < 3)
        return 0;
    stream = evbuffer_new();
    if (stream == NULL || evbuffer_add(stream, HANDSHAKE, sizeof(HANDSHAKE) - 1) < 0)
        abort();
    if (data[0] & 1) {
        if (evbuffer_add(stream, data + 3, size - 3) < 0)
            abort();
    } else {
        build_frames(data + 3, size - 3, stream);
    }
    total = evbuffer_get_length(stream);
    bytes = evbuffer_pullup(stream, -1);
    fuzz_conn_begin(&c, 0, (data[0] & 2) ? 512 : 0);
    fuzz_conn_send_pieces(&c, bytes, total, (uint32_t)data[1] << 8 | data[2], 256);
    fuzz_conn_read_all(&c);
    fuzz_conn_dump(&c);
    check_output(c.received, c.s->closing);
    fuzz_conn_end(&c);
    evbuffer_free(stream);
    return 0;
}
