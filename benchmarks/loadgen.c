/*
 * loadgen: a lock-step ASAP load generator over TLS and the RSerPool TCP
 * mapping (draft-ietf-rserpool-tcpmapping-03), for benchmarks/bench_registrar.py.
 *
 *     gcc -O2 -Wall -o loadgen benchmarks/loadgen.c -lssl -lcrypto
 *     loadgen -H 127.0.0.1 -p PORT -s SCRIPT -A CA.pem [-n SERVER_NAME] [-P PID [-S]]
 *
 * (benchgen.h, included, holds what it shares with sessgen.c: clocks, errors,
 * the server CPU accounting and the script reading primitives.)
 *
 * It sends pre-encoded DATA chunks (built by bench_registrar.py, which
 * knows the ASAP codec) and only parses chunk headers: every connection
 * sends one request, waits for the response DATA chunk and the ACK of its
 * request, then sends the next one (lock-step).  Every DATA chunk it
 * receives is acknowledged (the ACK chunks ride in front of the next
 * request), HEARTBEATs are answered.
 *
 * SCRIPT (all integers big-endian):
 *     "RSLG" u32 version(1) u32 nconn
 *     nconn x (u16 len, cert path, u16 len, key path)
 *     u32 nphases
 *     nphases x (u16 len, name, u8 mode (0 once, 1 timed), u8 expected ASAP type,
 *                u32 warmup_ms, u32 measure_ms,
 *                nconn x (u32 nmsgs, nmsgs x (u32 len, DATA chunk bytes)))
 *
 * Output lines on stdout: "READY n", then per phase "START name ..." /
 * "END name ..." around the measured window (timed phases) and
 * "RESULT {json}".  With -P, the START and END lines carry the server's CPU
 * time (ns, all threads, from /proc/PID/task/STAR/schedstat) and the busy
 * and total jiffies of CPU 0 and CPU 1 from /proc/stat, read at the exact
 * window boundaries; with -S the server also gets SIGUSR1 at the start and
 * SIGUSR2 at the end of each window.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <signal.h>
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

#define BENCH_PROG "loadgen"
#include "benchgen.h"

#define INBUF 262144
#define OUTBUF 262144
#define CHUNK_DATA 0
#define CHUNK_INIT 1
#define CHUNK_ACK 3
#define CHUNK_HEARTBEAT 4

typedef struct {
    uint32_t len;
    unsigned char *bytes;
} msg_t;

typedef struct {
    char *name;
    int mode;
    int expected;
    uint32_t warmup_ms, measure_ms;
    uint32_t *nmsgs;  /* per connection */
    msg_t **msgs;     /* per connection */
} phase_t;

typedef struct {
    int fd;
    SSL *ssl;
    unsigned char in[INBUF];
    size_t inlen;
    unsigned char out[OUTBUF];
    size_t outlen, outoff;
    int server_omit;      /* the server's INIT flags */
    int acks_owed;        /* DATA chunks received and not yet acknowledged */
    int busy;             /* a request is outstanding */
    int got_data, got_ack;
    int done;             /* nothing more to send in this phase */
    uint32_t idx;         /* next message */
    int want_out;
} conn_t;

static int server_pid = 0, signal_server = 0;
static conn_t *conns;
static int nconn;
static phase_t *phases;
static uint32_t nphases;
static int epfd;
static phase_t *cur;

/* per-phase counters */
static int measuring;
static double win_start, win_end;
static uint64_t completed_total, completed_window, unexpected, rejected, size_mismatch, heartbeats;
static long resp_len = -1, resp_len_other = -1;

/* -- window boundaries ------------------------------------------------------ */

static void boundary(const char *word, const char *name, int signum) {
    if (server_pid && signal_server) kill(server_pid, signum);
    if (!server_pid) {
        printf("%s %s\n", word, name);
        fflush(stdout);
    } else {
        cpu_boundary(word, name, server_pid);
    }
}

/* -- script reading (the primitives are in benchgen.h) ---------------------- */

static uint8_t rd8(void) {
    need(1);
    return script[script_pos++];
}

static char **cert_paths, **key_paths;

static void load_script(const char *path) {
    read_script(path, "RSLG", 1);
    nconn = (int)rd32();
    if (nconn < 1 || nconn > 10000) fail("bad connection count");
    cert_paths = calloc(nconn, sizeof(char *));
    key_paths = calloc(nconn, sizeof(char *));
    for (int i = 0; i < nconn; i++) {
        cert_paths[i] = rdstr();
        key_paths[i] = rdstr();
    }
    nphases = rd32();
    phases = calloc(nphases, sizeof(phase_t));
    for (uint32_t p = 0; p < nphases; p++) {
        phase_t *ph = &phases[p];
        ph->name = rdstr();
        ph->mode = rd8();
        ph->expected = rd8();
        ph->warmup_ms = rd32();
        ph->measure_ms = rd32();
        ph->nmsgs = calloc(nconn, sizeof(uint32_t));
        ph->msgs = calloc(nconn, sizeof(msg_t *));
        for (int i = 0; i < nconn; i++) {
            uint32_t n = rd32();
            if (n < 1) fail("a connection needs at least one message per phase");
            ph->nmsgs[i] = n;
            ph->msgs[i] = calloc(n, sizeof(msg_t));
            for (uint32_t m = 0; m < n; m++) {
                uint32_t len = rd32();
                if (len < 8 || len > 65536) fail("bad message length");
                need(len);
                ph->msgs[i][m].len = len;
                ph->msgs[i][m].bytes = script + script_pos;
                script_pos += len;
            }
        }
    }
}

/* -- sending ------------------------------------------------------------------ */

static void set_events(conn_t *c, int want_out) {
    if (c->want_out == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
    c->want_out = want_out;
}

static void flush(conn_t *c) {
    while (c->outoff < c->outlen) {
        int n = SSL_write(c->ssl, c->out + c->outoff, (int)(c->outlen - c->outoff));
        if (n > 0) {
            c->outoff += (size_t)n;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
            set_events(c, err == SSL_ERROR_WANT_WRITE);
            return;
        }
        fail("SSL_write failed (server closed the connection?)");
    }
    c->outoff = c->outlen = 0;
    set_events(c, 0);
}

static void queue(conn_t *c, const unsigned char *data, size_t len) {
    if (c->outoff > 0 && c->outoff == c->outlen) c->outoff = c->outlen = 0;
    if (c->outlen + len > OUTBUF) fail("output buffer overflow");
    memcpy(c->out + c->outlen, data, len);
    c->outlen += len;
}

static const unsigned char ACK_CHUNK[4] = {CHUNK_ACK, 0, 0, 4};

static void send_next(conn_t *c) {
    msg_t *m = &cur->msgs[c - conns][c->idx];
    c->idx++;
    if (c->idx >= cur->nmsgs[c - conns]) {
        if (cur->mode == 0) c->done = 1;  /* once: this was the last one */
        c->idx = 0;
    }
    while (c->acks_owed > 0) {
        queue(c, ACK_CHUNK, 4);
        c->acks_owed--;
    }
    queue(c, m->bytes, m->len);
    c->busy = 1;
    c->got_data = c->got_ack = 0;
    flush(c);
}

/* -- receiving ---------------------------------------------------------------- */

static void completed(conn_t *c, double t) {
    c->busy = 0;
    completed_total++;
    if (measuring && t >= win_start && t < win_end) completed_window++;
    if (cur->mode == 0) {
        if (!c->done) send_next(c);
    } else if (t < win_end) {
        send_next(c);
    } else {
        c->done = 1;
    }
}

static void on_chunk(conn_t *c, unsigned char *p, size_t len, double t) {
    int type = p[0];
    if (type == CHUNK_DATA) {
        size_t h = data_header_size(c->server_omit);
        c->acks_owed++;
        if (len < h + 4) {
            unexpected++;
            return;
        }
        int asap_type = p[h], asap_flags = p[h + 1];
        if (asap_type != cur->expected || !c->busy || c->got_data) {
            unexpected++;
            return;
        }
        if (resp_len < 0) resp_len = (long)len;
        if ((long)len != resp_len) {
            size_mismatch++;
            resp_len_other = (long)len;
        }
        if (asap_type == 0x03 && (asap_flags & 0x01)) rejected++;
        c->got_data = 1;
    } else if (type == CHUNK_ACK) {
        c->got_ack = 1;
    } else if (type == CHUNK_INIT) {
        c->server_omit = p[1] & 7;
        return;
    } else if (type == CHUNK_HEARTBEAT) {
        unsigned char reply[1024];
        size_t total = (len + 3) & ~(size_t)3;
        if (total > sizeof reply) fail("heartbeat too long");
        memcpy(reply, p, total);
        reply[0] = 5;  /* HEARTBEAT ACK echoes the info */
        heartbeats++;
        queue(c, reply, total);
        flush(c);
        return;
    } else {
        return;  /* HEARTBEAT ACK or unknown: ignore */
    }
    if (c->busy && c->got_data && c->got_ack) completed(c, t);
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->inlen >= INBUF) fail("input buffer overflow");
        int n = SSL_read(c->ssl, c->in + c->inlen, (int)(INBUF - c->inlen));
        if (n <= 0) {
            int err = SSL_get_error(c->ssl, n);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) break;
            fail("connection closed by the server");
        }
        c->inlen += (size_t)n;
        double t = now_s();
        size_t off = 0;
        while (c->inlen - off >= 4) {
            unsigned char *p = c->in + off;
            size_t len = ((size_t)p[2] << 8) | p[3];
            if (len < 4) fail("bad chunk length from the server");
            size_t total = (len + 3) & ~(size_t)3;
            if (c->inlen - off < total) break;
            on_chunk(c, p, len, t);
            off += total;
        }
        if (off > 0) {
            memmove(c->in, c->in + off, c->inlen - off);
            c->inlen -= off;
        }
    }
    if (c->outoff < c->outlen) flush(c);
}

/* -- connections ---------------------------------------------------------------- */

static void connect_all(const char *host, int port, const char *ca, const char *server_name) {
    conns = calloc(nconn, sizeof(conn_t));
    for (int i = 0; i < nconn; i++) {
        conn_t *c = &conns[i];
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx) fail("SSL_CTX_new");
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) fail("loading the CA");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (SSL_CTX_use_certificate_chain_file(ctx, cert_paths[i]) != 1) fail("loading a client certificate");
        if (SSL_CTX_use_PrivateKey_file(ctx, key_paths[i], SSL_FILETYPE_PEM) != 1) fail("loading a client key");
        SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0) die("socket");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) fail("bad host address");
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
        c->ssl = SSL_new(ctx);
        SSL_CTX_free(ctx);  /* the SSL keeps a reference */
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, server_name);
        SSL_set1_host(c->ssl, server_name);
        if (SSL_connect(c->ssl) != 1) fail("TLS handshake failed");
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl add");
        /* Our INIT: DATA chunks omit the TSN and the stream fields (PPID kept). */
        static const unsigned char init[4] = {CHUNK_INIT, 0x03, 0, 4};
        queue(c, init, 4);
        flush(c);
    }
}

/* -- phases ----------------------------------------------------------------------- */

static int all_idle(void) {
    for (int i = 0; i < nconn; i++)
        if (conns[i].busy) return 0;
    return 1;
}

static void run_phase(phase_t *ph) {
    struct epoll_event events[256];
    double user0 = 0, sys0 = 0, user1 = 0, sys1 = 0;
    cur = ph;
    measuring = 0;
    completed_total = completed_window = unexpected = rejected = size_mismatch = heartbeats = 0;
    resp_len = resp_len_other = -1;
    double t0 = now_s();
    win_start = ph->mode ? t0 + ph->warmup_ms / 1000.0 : t0;
    win_end = ph->mode ? win_start + ph->measure_ms / 1000.0 : 1e300;
    for (int i = 0; i < nconn; i++) {
        conns[i].idx = 0;
        conns[i].done = 0;
        conns[i].busy = 0;
    }
    for (int i = 0; i < nconn; i++) send_next(&conns[i]);
    int started = 0, ended = 0;
    double deadline = t0 + (ph->mode ? (ph->warmup_ms + ph->measure_ms) / 1000.0 + 30 : 120);
    for (;;) {
        double t = now_s();
        if (ph->mode && !started && t >= win_start) {
            started = measuring = 1;
            cpu_s(&user0, &sys0);
            boundary("START", ph->name, SIGUSR1);
        }
        if (ph->mode && started && !ended && t >= win_end) {
            ended = 1;
            cpu_s(&user1, &sys1);
            boundary("END", ph->name, SIGUSR2);
        }
        if ((ph->mode == 0 || ended) && all_idle()) break;
        if (t > deadline) fail("phase timed out (responses missing)");
        int timeout = 50;
        if (ph->mode && !started) timeout = (int)((win_start - t) * 1000) + 1;
        else if (ph->mode && !ended) timeout = (int)((win_end - t) * 1000) + 1;
        if (timeout > 50) timeout = 50;
        int n = epoll_wait(epfd, events, 256, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int k = 0; k < n; k++) {
            conn_t *c = events[k].data.ptr;
            if (events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            if (events[k].events & EPOLLOUT) flush(c);
        }
    }
    double window = ph->mode ? win_end - win_start : now_s() - t0;
    if (ph->mode == 0) cpu_s(&user1, &sys1);
    printf("RESULT {\"phase\": \"%s\", \"timed\": %s, \"connections\": %d, \"window_s\": %.6f, "
           "\"completed\": %llu, \"completed_total\": %llu, \"gen_cpu_user_s\": %.6f, \"gen_cpu_sys_s\": %.6f, "
           "\"unexpected\": %llu, \"rejected\": %llu, \"size_mismatch\": %llu, \"heartbeats\": %llu, "
           "\"response_chunk_bytes\": %ld, \"request_chunk_bytes\": %u}\n",
           ph->name, ph->mode ? "true" : "false", nconn, window,
           (unsigned long long)(ph->mode ? completed_window : completed_total),
           (unsigned long long)completed_total, user1 - user0, sys1 - sys0,
           (unsigned long long)unexpected, (unsigned long long)rejected,
           (unsigned long long)size_mismatch, (unsigned long long)heartbeats, resp_len, ph->msgs[0][0].len);
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *script_path = NULL, *ca = NULL, *server_name = "localhost";
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "H:p:s:A:n:P:S")) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': script_path = optarg; break;
        case 'A': ca = optarg; break;
        case 'n': server_name = optarg; break;
        case 'P': server_pid = atoi(optarg); break;
        case 'S': signal_server = 1; break;
        default: fail("usage: loadgen -H host -p port -s script -A ca.pem [-n server-name] [-P pid [-S]]");
        }
    }
    if (!port || !script_path || !ca) fail("usage: loadgen -H host -p port -s script -A ca.pem [-n server-name] [-P pid [-S]]");
    load_script(script_path);
    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    connect_all(host, port, ca, server_name);
    printf("READY %d %s\n", nconn, SSL_get_version(conns[0].ssl));
    fflush(stdout);
    for (uint32_t p = 0; p < nphases; p++) run_phase(&phases[p]);
    for (int i = 0; i < nconn; i++) {
        SSL_free(conns[i].ssl);
        close(conns[i].fd);
    }
    return 0;
}
