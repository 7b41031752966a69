/*
 * sessgen: a new-session load generator for benchmarks/bench_sessions.py.
 *
 *     gcc -O2 -Wall -o sessgen benchmarks/sessgen.c -lssl -lcrypto
 *     sessgen -p PORT -s SCRIPT -A CA.pem [-H 127.0.0.1] [-n SERVER_NAME] [-c SLOTS]
 *             [-w WARMUP_MS] [-m MEASURE_MS] [-r] [-P PID]
 *
 * (benchgen.h, included, holds what it shares with loadgen.c: clocks, errors,
 * the server CPU accounting and the script reading primitives.)
 *
 * Each of -c slots repeats: non-blocking TCP connect, TLS handshake with
 * the slot's client certificate (verifying the server against CA.pem and
 * SERVER_NAME), one request (pre-encoded by the Python side: the TCP
 * mapping INIT chunk plus a DATA chunk carrying ASAP_REGISTRATION), read
 * until the ASAP_REGISTRATION_RESPONSE DATA chunk arrives, then
 * SSL_shutdown (close_notify) and close.  With -r every slot offers the
 * session (TLS 1.3 ticket) of its previous connection.
 *
 * SCRIPT (big-endian): "RSSG" u32 version(1) u32 nid,
 *     nid x (u16 len, cert path, u16 len, key path, u32 len, request bytes).
 * Slot i uses identity i % nid.
 *
 * Output (stdout): "READY", "START window ..." and "END window ..." with
 * the server's CPU time and /proc/stat jiffies (the format of loadgen.c),
 * then "RESULT {json}" with the sessions completed in the window, resumed
 * handshakes, errors by kind and the generator's own CPU (getrusage).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BENCH_PROG "sessgen"
#include "benchgen.h"

#define INBUF 16384

enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_SENDING, S_READING, S_DONE };

typedef struct {
    SSL_CTX *ctx;
    unsigned char *req;
    uint32_t req_len;
} ident_t;

typedef struct {
    int fd;
    SSL *ssl;
    int state;
    int ident;
    SSL_SESSION *last;
    unsigned char in[INBUF];
    size_t inlen;
    size_t sent;
    int server_omit;
    unsigned events;
} slot_t;

static ident_t *idents;
static uint32_t nid;
static slot_t *slots;
static int nslots = 32, resume = 0, server_pid = 0, port = 0, epfd;
static const char *host = "127.0.0.1", *server_name = "localhost";
static struct sockaddr_in addr;
static int measuring = 0, stopping = 0;
static uint64_t done_window, done_total, resumed_window;
static uint64_t err_connect, err_handshake, err_io, err_rejected, err_unexpected;

/* -- script ------------------------------------------------------------------ */

static void load_script(const char *path, const char *ca) {
    read_script(path, "RSSG");
    nid = rd32();
    if (nid < 1 || nid > 100000) fail("bad identity count");
    idents = calloc(nid, sizeof(ident_t));
    for (uint32_t i = 0; i < nid; i++) {
        char *cert = rdstr(), *key = rdstr();
        uint32_t len = rd32();
        if (len < 8 || len > 65536) fail("bad request length");
        need(len);
        idents[i].req = script + script_pos;
        idents[i].req_len = len;
        script_pos += len;
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx) fail("SSL_CTX_new");
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) fail("loading the CA");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (cert[0]) {
            if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) fail("loading a client certificate");
            if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) fail("loading a client key");
        }
        /* Keep sessions from tickets for -r (we store them ourselves). */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        idents[i].ctx = ctx;
        free(cert);
        free(key);
    }
}

/* -- one session ---------------------------------------------------------------- */

static void set_events(slot_t *s, unsigned events) {
    if (s->events == events) return;
    struct epoll_event ev = {.events = events, .data.ptr = s};
    if (epoll_ctl(epfd, s->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s->fd, &ev) < 0) die("epoll_ctl");
    s->events = events;
}

static void start(slot_t *s);

static void finish(slot_t *s, int ok) {
    if (s->ssl) {
        if (ok) {
            if (resume) {
                SSL_SESSION *sess = SSL_get1_session(s->ssl);
                if (sess && SSL_SESSION_is_resumable(sess)) {
                    if (s->last) SSL_SESSION_free(s->last);
                    s->last = sess;
                } else if (sess) {
                    SSL_SESSION_free(sess);
                }
            }
            SSL_shutdown(s->ssl); /* sends close_notify; we do not wait for the server's */
        }
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->fd = -1;
    }
    s->events = 0;
    s->state = S_IDLE;
    if (!stopping) start(s);
}

static void start(slot_t *s) {
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) die("socket");
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->inlen = s->sent = 0;
    s->server_omit = 0;
    s->events = 0;
    ident_t *id = &idents[s->ident];
    s->ssl = SSL_new(id->ctx);
    SSL_set_fd(s->ssl, s->fd);
    SSL_set_tlsext_host_name(s->ssl, server_name);
    SSL_set1_host(s->ssl, server_name);
    if (resume && s->last) SSL_set_session(s->ssl, s->last);
    if (connect(s->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        /* e.g. no local port free: the main loop retries idle slots (no recursion here) */
        err_connect++;
        SSL_free(s->ssl);
        s->ssl = NULL;
        close(s->fd);
        s->fd = -1;
        s->state = S_IDLE;
        return;
    }
    s->state = S_CONNECTING;
    set_events(s, EPOLLOUT);
}

/* 1: response complete, 0: need more, -1: error */
static int parse(slot_t *s) {
    size_t off = 0;
    while (s->inlen - off >= 4) {
        unsigned char *p = s->in + off;
        size_t len = ((size_t)p[2] << 8) | p[3];
        if (len < 4) return -1;
        size_t total = (len + 3) & ~(size_t)3;
        if (s->inlen - off < total) break;
        if (p[0] == 1) {
            s->server_omit = p[1] & 7;
        } else if (p[0] == 0) {
            size_t h = data_header_size(s->server_omit);
            if (len < h + 4) { err_unexpected++; return -1; }
            if (p[h] != 0x03) { err_unexpected++; return -1; }
            if (p[h + 1] & 1) { err_rejected++; return -1; }
            return 1;
        }
        off += total;
    }
    if (off) {
        memmove(s->in, s->in + off, s->inlen - off);
        s->inlen -= off;
    }
    return 0;
}

static void step(slot_t *s) {
    for (;;) {
        if (s->state == S_CONNECTING) {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) { err_connect++; finish(s, 0); return; }
            s->state = S_HANDSHAKE;
        } else if (s->state == S_HANDSHAKE) {
            int r = SSL_connect(s->ssl);
            if (r != 1) {
                int e = SSL_get_error(s->ssl, r);
                if (e == SSL_ERROR_WANT_READ) { set_events(s, EPOLLIN); return; }
                if (e == SSL_ERROR_WANT_WRITE) { set_events(s, EPOLLOUT); return; }
                err_handshake++;
                if (err_handshake < 3) ERR_print_errors_fp(stderr);
                ERR_clear_error();
                finish(s, 0);
                return;
            }
            s->state = S_SENDING;
        } else if (s->state == S_SENDING) {
            ident_t *id = &idents[s->ident];
            int r = SSL_write(s->ssl, id->req + s->sent, (int)(id->req_len - s->sent));
            if (r <= 0) {
                int e = SSL_get_error(s->ssl, r);
                if (e == SSL_ERROR_WANT_READ) { set_events(s, EPOLLIN); return; }
                if (e == SSL_ERROR_WANT_WRITE) { set_events(s, EPOLLOUT); return; }
                err_io++;
                ERR_clear_error();
                finish(s, 0);
                return;
            }
            s->sent += (size_t)r;
            if (s->sent == id->req_len) s->state = S_READING;
        } else if (s->state == S_READING) {
            int r = SSL_read(s->ssl, s->in + s->inlen, (int)(INBUF - s->inlen));
            if (r <= 0) {
                int e = SSL_get_error(s->ssl, r);
                if (e == SSL_ERROR_WANT_READ) { set_events(s, EPOLLIN); return; }
                if (e == SSL_ERROR_WANT_WRITE) { set_events(s, EPOLLOUT); return; }
                err_io++;
                ERR_clear_error();
                finish(s, 0);
                return;
            }
            s->inlen += (size_t)r;
            int done = parse(s);
            if (done < 0) { finish(s, 0); return; }
            if (done > 0) {
                done_total++;
                if (measuring) {
                    done_window++;
                    if (SSL_session_reused(s->ssl)) resumed_window++;
                }
                finish(s, 1);
                return;
            }
            if (s->inlen >= INBUF) { err_io++; finish(s, 0); return; }
        } else {
            return;
        }
    }
}

int main(int argc, char **argv) {
    const char *script_path = NULL, *ca = NULL;
    int warmup_ms = 1000, measure_ms = 3000, opt;
    while ((opt = getopt(argc, argv, "H:p:s:A:n:c:w:m:rP:")) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': script_path = optarg; break;
        case 'A': ca = optarg; break;
        case 'n': server_name = optarg; break;
        case 'c': nslots = atoi(optarg); break;
        case 'w': warmup_ms = atoi(optarg); break;
        case 'm': measure_ms = atoi(optarg); break;
        case 'r': resume = 1; break;
        case 'P': server_pid = atoi(optarg); break;
        default: fail("bad option");
        }
    }
    if (!port || !script_path || !ca || nslots < 1) fail("usage: sessgen -p PORT -s SCRIPT -A CA [...]");
    load_script(script_path, ca);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) fail("bad host");
    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    slots = calloc(nslots, sizeof(slot_t));
    printf("READY\n");
    fflush(stdout);
    double t0 = now_s(), win_start = t0 + warmup_ms / 1000.0, win_end = win_start + measure_ms / 1000.0;
    double user0 = 0, sys0 = 0, user1 = 0, sys1 = 0;
    for (int i = 0; i < nslots; i++) {
        slots[i].fd = -1;
        slots[i].ident = i % (int)nid;
        start(&slots[i]);
    }
    struct epoll_event events[256];
    int ended = 0;
    for (;;) {
        double t = now_s();
        if (!measuring && !ended && t >= win_start) {
            measuring = 1;
            cpu_s(&user0, &sys0);
            cpu_boundary("START", "window", server_pid);
        }
        if (measuring && t >= win_end) {
            measuring = 0;
            ended = 1;
            cpu_s(&user1, &sys1);
            cpu_boundary("END", "window", server_pid);
            stopping = 1;
            break;
        }
        double until = (measuring ? win_end : win_start) - t;
        int timeout = (int)(until * 1000) + 1;
        if (timeout > 50) timeout = 50;
        int n = epoll_wait(epfd, events, 256, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int k = 0; k < n; k++) step((slot_t *)events[k].data.ptr);
        if (err_connect)
            for (int i = 0; i < nslots; i++)
                if (slots[i].state == S_IDLE && slots[i].fd < 0) start(&slots[i]);
    }
    for (int i = 0; i < nslots; i++) {
        if (slots[i].ssl) SSL_free(slots[i].ssl);
        if (slots[i].fd >= 0) close(slots[i].fd);
        if (slots[i].last) SSL_SESSION_free(slots[i].last);
    }
    printf("RESULT {\"window_s\": %.6f, \"completed\": %llu, \"completed_total\": %llu, \"resumed\": %llu, "
           "\"gen_cpu_user_s\": %.6f, \"gen_cpu_sys_s\": %.6f, \"slots\": %d, \"errors\": {\"connect\": %llu, "
           "\"handshake\": %llu, \"io\": %llu, \"rejected\": %llu, \"unexpected\": %llu}}\n",
           win_end - win_start, (unsigned long long)done_window, (unsigned long long)done_total,
           (unsigned long long)resumed_window, user1 - user0, sys1 - sys0, nslots,
           (unsigned long long)err_connect, (unsigned long long)err_handshake, (unsigned long long)err_io,
           (unsigned long long)err_rejected, (unsigned long long)err_unexpected);
    return 0;
}
