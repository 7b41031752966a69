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
 * Each of -c slots repeats one session of its identity's kind: non-blocking
 * TCP connect, TLS 1.3 handshake (verifying the server against CA.pem and
 * SERVER_NAME), then
 *
 * - certificate: the handshake carries the identity's client certificate;
 *   one write of the pre-encoded request (the TCP mapping INIT chunk plus a
 *   DATA chunk carrying ASAP_REGISTRATION); read until the
 *   ASAP_REGISTRATION_RESPONSE DATA chunk arrives;
 * - SRP-6a-SHA256-2048 or CHAP-MD5 (docs/asap-auth-extension.md, the PE
 *   library's pipelined flow): no client certificate; one write of INIT +
 *   DATA(ASAP_AUTH_REQUEST) + DATA(ASAP_AUTH_HELLO) (pre-encoded); read
 *   ASAP_AUTH_OFFER (it must list the mechanism) and the challenge; one
 *   write of DATA(ASAP_AUTH_SRP_PROOF or ASAP_AUTH_CHAP_RESPONSE) +
 *   DATA(ASAP_REGISTRATION) (a pre-encoded template with the proof's fields
 *   filled in); read ASAP_AUTH_SUCCESS (mechanism checked; for SRP M2
 *   verified) and the ASAP_REGISTRATION_RESPONSE;
 *
 * then SSL_shutdown (close_notify) and close.  The registrar's ACK chunks
 * (and anything else that is not DATA) are skipped; nothing is answered.
 * The channel binding is the TLS exporter "EXPORTER-rserpool-auth", 32
 * bytes, no context (rserpool.service.auth.channel_binding); the SRP and
 * CHAP arithmetic is rserpool/security/srp.py's and chap.py's
 * (docs/auth-exchanges.md), with what does not depend on the session (x and
 * k*g^x mod N, for the salt the registrar's store holds) precomputed by the
 * Python side.  As in the PE library, S = (B - k*g^x)^(a + u*x) is
 * computed with BN_mod_exp_mont_consttime and A = g^a with a fixed-base table
 * (8-bit windows, 32 products; 2 MB built at start).  With -r every slot offers the session (TLS 1.3 ticket) of its
 * previous connection.
 *
 * SCRIPT (big-endian): "RSSG" u32 version(2) u32 nid,
 *     b16 N, b16 PAD(g)            (the SRP group; N is 256 bytes)
 *     nid x (u8 kind, then by kind:
 *       0 certificate: b16 cert path, b16 key path, b32 request;
 *       1 SRP, 2 CHAP: b16 mechanism, b16 identity, b32 first write,
 *         b32 second-write template, u16 offset1, u16 offset2, then
 *         SRP: b16 salt, b16 x, b16 PAD(k*g^x mod N)
 *           (offset1: PAD(A), 256 bytes; offset2: M1, 32 bytes);
 *         CHAP: b16 secret
 *           (offset1: the identifier byte; offset2: the 16-byte response))
 * where bN is a uN length and that many bytes.  Slot i uses identity i % nid.
 *
 * Output (stdout): "READY", "START window ..." and "END window ..." with
 * the server's CPU time and /proc/stat jiffies (the format of loadgen.c),
 * then "RESULT {json}" with the sessions completed in the window, resumed
 * handshakes, errors by kind and the generator's own CPU (getrusage).
 * Error kinds: connect, handshake, io, rejected (the registration), auth
 * (an ASAP_AUTH_FAILURE, a bad challenge, a wrong M2), unexpected (any other
 * message out of place).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
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
#define OUTBUF 4096
#define SCRIPT_VERSION 2

/* the protocol (rserpool/wire/codes.py, docs/asap-auth-extension.md) */
#define CHUNK_DATA 0
#define CHUNK_INIT 1
#define ASAP_REGISTRATION_RESPONSE 0x03
#define ASAP_AUTH_OFFER 0x71
#define ASAP_AUTH_SRP_CHALLENGE 0x73
#define ASAP_AUTH_CHAP_CHALLENGE 0x75
#define ASAP_AUTH_SUCCESS 0x77
#define ASAP_AUTH_FAILURE 0x78
#define PARAM_AUTH_MECHANISM 0x7F01
#define PARAM_SRP_SALT 0x7F03
#define PARAM_SRP_PUBLIC 0x7F04
#define PARAM_SRP_PROOF 0x7F05
#define PARAM_CHAP_CHALLENGE 0x7F06
#define SRP_LEN 256 /* PAD(): the 2048-bit group */
#define HASH_LEN 32 /* SHA-256 */
#define CB_LEN 32
#define CHAP_NONCE_LEN 32
#define CHAP_CHALLENGE_LEN 16
#define CHAP_RESPONSE_LEN 16
static const char EXPORTER_LABEL[] = "EXPORTER-rserpool-auth";
static const char CHAP_LABEL[] = "rserpool CHAP challenge";

enum { K_CERT = 0, K_SRP = 1, K_CHAP = 2 };
enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_SENDING, S_READING, S_DONE };
/* an SRP/CHAP session's progress while reading */
enum { P_CHALLENGE, P_RESULT };

typedef struct {
    const unsigned char *p;
    uint32_t len;
} bytes_t;

typedef struct {
    int kind;
    SSL_CTX *ctx;
    bytes_t req;         /* certificate: the request; SRP/CHAP: the first write */
    bytes_t tmpl;        /* SRP/CHAP: the second write's template */
    uint32_t off1, off2; /* where the proof's fields go in the template */
    bytes_t mech, name;  /* mechanism name, identity */
    bytes_t salt, secret;
    unsigned char hi[HASH_LEN]; /* SRP: H(I) */
    BIGNUM *x, *kgx;            /* SRP: x, k*g^x mod N */
} ident_t;

typedef struct {
    int fd;
    SSL *ssl;
    int state;
    int ident;
    SSL_SESSION *last;
    unsigned char in[INBUF];
    size_t inlen;
    const unsigned char *out; /* what S_SENDING writes */
    size_t outlen, sent;
    int server_omit;
    unsigned events;
    int phase, offered, succeeded; /* SRP/CHAP */
    unsigned char cb[CB_LEN];      /* channel binding */
    unsigned char m2[HASH_LEN];    /* SRP: the M2 expected */
    unsigned char second[OUTBUF];  /* SRP/CHAP: the second write */
} slot_t;

static ident_t *idents;
static uint32_t nid;
static slot_t *slots;
static int nslots = 32, resume = 0, server_pid = 0, port = 0, epfd;
static const char *host = "127.0.0.1", *server_name = "localhost";
static struct sockaddr_in addr;
static int measuring = 0, stopping = 0;
static uint64_t done_window, done_total, resumed_window;
static uint64_t err_connect, err_handshake, err_io, err_rejected, err_unexpected, err_auth;

/* the SRP group and the scratch values of one computation (one thread) */
static BIGNUM *srp_n, *srp_n1, *srp_g, *bn_a, *bn_A, *bn_B, *bn_u, *bn_e, *bn_base, *bn_s;
static BN_CTX *bn_ctx;
static BN_MONT_CTX *srp_mont;
static unsigned char srp_hng[HASH_LEN]; /* H(N) xor H(PAD(g)) */
/* g^a for a of 256 bits as the PE library computes it (srp.py's _FixedBase):
 * g_table[i][j] = g^(j * 256^i) mod N in Montgomery form, 32 products. */
#define EPHEMERAL_LEN 32
static BIGNUM *g_table[EPHEMERAL_LEN][256], *g_one;
static EVP_MD *md_sha256, *md_md5;
static EVP_MD_CTX *md_ctx;

/* -- hashing -------------------------------------------------------------------------- */

/* out = md(parts[0] | parts[1] | ...), n parts */
static void digest(const EVP_MD *md, unsigned char *out, int n, const bytes_t *parts) {
    if (EVP_DigestInit_ex(md_ctx, md, NULL) != 1) fail("EVP_DigestInit_ex");
    for (int i = 0; i < n; i++)
        if (EVP_DigestUpdate(md_ctx, parts[i].p, parts[i].len) != 1) fail("EVP_DigestUpdate");
    if (EVP_DigestFinal_ex(md_ctx, out, NULL) != 1) fail("EVP_DigestFinal_ex");
}

#define B(ptr, n) ((bytes_t){(const unsigned char *)(ptr), (uint32_t)(n)})
#define SHA256_OF(out, ...)                                                                       \
    digest(md_sha256, out, sizeof((bytes_t[]){__VA_ARGS__}) / sizeof(bytes_t), (bytes_t[]){__VA_ARGS__})

/* -- script ------------------------------------------------------------------ */

static uint8_t rd8(void) {
    need(1);
    return script[script_pos++];
}

/* u16 (or u32 with wide) length, then that many bytes: a view into the script */
static bytes_t rdbytes(int wide) {
    bytes_t b;
    b.len = wide ? rd32() : rd16();
    need(b.len);
    b.p = script + script_pos;
    script_pos += b.len;
    return b;
}

static BIGNUM *rdbn(size_t max_len) {
    bytes_t b = rdbytes(0);
    if (b.len < 1 || b.len > max_len) fail("bad SRP value in the script");
    BIGNUM *n = BN_bin2bn(b.p, (int)b.len, NULL);
    if (!n) fail("BN_bin2bn");
    return n;
}

static SSL_CTX *client_ctx(const char *ca, const char *cert, const char *key) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) fail("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) fail("loading the CA");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (cert && cert[0]) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) fail("loading a client certificate");
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) fail("loading a client key");
    }
    /* Keep sessions from tickets for -r (we store them ourselves). */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    return ctx;
}

static void load_group(void) {
    bytes_t n = rdbytes(0), g = rdbytes(0);
    if (n.len != SRP_LEN || n.p[0] == 0 || !(n.p[SRP_LEN - 1] & 1)) fail("the SRP modulus must be 256 bytes, odd");
    if (g.len != SRP_LEN) fail("PAD(g) must be 256 bytes");
    srp_n = BN_bin2bn(n.p, (int)n.len, NULL);
    srp_g = BN_bin2bn(g.p, (int)g.len, NULL);
    srp_n1 = BN_new();
    bn_ctx = BN_CTX_new();
    srp_mont = BN_MONT_CTX_new();
    if (!srp_n || !srp_g || !srp_n1 || !bn_ctx || !srp_mont) fail("BN allocation");
    if (!BN_sub(srp_n1, srp_n, BN_value_one())) fail("BN_sub");
    if (BN_is_zero(srp_g) || BN_cmp(srp_g, srp_n) >= 0) fail("bad SRP generator");
    if (!BN_MONT_CTX_set(srp_mont, srp_n, bn_ctx)) fail("BN_MONT_CTX_set");
    BIGNUM *current = BN_new();
    g_one = BN_new();
    if (!current || !g_one || !BN_to_montgomery(current, srp_g, srp_mont, bn_ctx) ||
        !BN_to_montgomery(g_one, BN_value_one(), srp_mont, bn_ctx))
        fail("BN_to_montgomery");
    for (int i = 0; i < EPHEMERAL_LEN; i++) {
        g_table[i][1] = BN_dup(current);
        for (int j = 2; j < 256; j++) {
            g_table[i][j] = BN_new();
            if (!g_table[i][j] || !BN_mod_mul_montgomery(g_table[i][j], g_table[i][j - 1], current, srp_mont, bn_ctx))
                fail("building the g^a table");
        }
        if (!BN_mod_mul_montgomery(current, g_table[i][255], current, srp_mont, bn_ctx)) fail("building the g^a table");
    }
    BN_free(current);
    BIGNUM **scratch[] = {&bn_a, &bn_A, &bn_B, &bn_u, &bn_e, &bn_base, &bn_s};
    for (size_t i = 0; i < sizeof scratch / sizeof *scratch; i++)
        if (!(*scratch[i] = BN_new())) fail("BN_new");
    unsigned char hn[HASH_LEN], hg[HASH_LEN];
    SHA256_OF(hn, n);
    SHA256_OF(hg, g);
    for (int i = 0; i < HASH_LEN; i++) srp_hng[i] = hn[i] ^ hg[i];
}

static void load_script(const char *path, const char *ca) {
    if (read_script(path, "RSSG", SCRIPT_VERSION) != SCRIPT_VERSION) fail("unknown script version");
    nid = rd32();
    if (nid < 1 || nid > 100000) fail("bad identity count");
    load_group();
    idents = calloc(nid, sizeof(ident_t));
    SSL_CTX *anonymous = NULL; /* shared by the SRP and CHAP identities: no client certificate */
    for (uint32_t i = 0; i < nid; i++) {
        ident_t *id = &idents[i];
        id->kind = rd8();
        if (id->kind == K_CERT) {
            char *cert = rdstr(), *key = rdstr();
            id->req = rdbytes(1);
            if (id->req.len < 8 || id->req.len > 65536) fail("bad request length");
            id->ctx = client_ctx(ca, cert, key);
            free(cert);
            free(key);
            continue;
        }
        if (id->kind != K_SRP && id->kind != K_CHAP) fail("unknown identity kind");
        id->mech = rdbytes(0);
        id->name = rdbytes(0);
        id->req = rdbytes(1);
        id->tmpl = rdbytes(1);
        id->off1 = rd16();
        id->off2 = rd16();
        if (id->mech.len < 1 || id->mech.len > 32 || id->name.len < 1) fail("bad mechanism or identity");
        if (id->req.len < 8 || id->req.len > 65536) fail("bad first write length");
        if (id->tmpl.len > OUTBUF) fail("the second write's template is too long");
        size_t len1 = id->kind == K_SRP ? SRP_LEN : 1, len2 = id->kind == K_SRP ? HASH_LEN : CHAP_RESPONSE_LEN;
        if (id->off1 + len1 > id->tmpl.len || id->off2 + len2 > id->tmpl.len) fail("bad template offsets");
        if (id->kind == K_SRP) {
            id->salt = rdbytes(0);
            if (id->salt.len < 8 || id->salt.len > 64) fail("bad salt");
            id->x = rdbn(HASH_LEN);
            id->kgx = rdbn(SRP_LEN);
            if (BN_cmp(id->kgx, srp_n) >= 0) fail("k*g^x not reduced mod N");
            SHA256_OF(id->hi, id->name);
        } else {
            id->secret = rdbytes(0);
        }
        if (!anonymous) anonymous = client_ctx(ca, NULL, NULL);
        id->ctx = anonymous;
    }
    if (script_pos != script_len) fail("trailing bytes in the script");
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
    s->phase = P_CHALLENGE;
    s->offered = s->succeeded = 0;
    ident_t *id = &idents[s->ident];
    s->out = id->req.p;
    s->outlen = id->req.len;
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

/* -- SRP and CHAP ------------------------------------------------------------------- */

/* The first value of parameter `type` in the message (m, mlen): 1 found, 0 not, -1 malformed. */
static int param(const unsigned char *m, size_t mlen, unsigned type, bytes_t *value) {
    for (size_t pos = 4; pos < mlen;) {
        if (mlen - pos < 4) return -1;
        unsigned ptype = (m[pos] << 8) | m[pos + 1];
        size_t plen = ((size_t)m[pos + 2] << 8) | m[pos + 3];
        if (plen < 4 || plen > mlen - pos) return -1;
        if (ptype == type) {
            *value = B(m + pos + 4, plen - 4);
            return 1;
        }
        pos = (pos + plen + 3) & ~(size_t)3;
    }
    return 0;
}

/* Does the ASAP_AUTH_OFFER list the mechanism? */
static int offers(const unsigned char *m, size_t mlen, bytes_t mech) {
    for (size_t pos = 4; pos < mlen;) {
        if (mlen - pos < 4) return 0;
        unsigned ptype = (m[pos] << 8) | m[pos + 1];
        size_t plen = ((size_t)m[pos + 2] << 8) | m[pos + 3];
        if (plen < 4 || plen > mlen - pos) return 0;
        if (ptype == PARAM_AUTH_MECHANISM && plen - 4 == mech.len && !memcmp(m + pos + 4, mech.p, mech.len))
            return 1;
        pos = (pos + plen + 3) & ~(size_t)3;
    }
    return 0;
}

static int auth_error(const char *what) {
    err_auth++;
    if (err_auth <= 3) fprintf(stderr, BENCH_PROG ": %s\n", what);
    return -1;
}

/* r = g^a mod N, a given as EPHEMERAL_LEN big-endian bytes (the table) */
static void g_pow(BIGNUM *r, const unsigned char a[EPHEMERAL_LEN]) {
    if (!BN_copy(r, g_one)) fail("BN_copy");
    for (int i = 0; i < EPHEMERAL_LEN; i++) {
        unsigned digit = a[EPHEMERAL_LEN - 1 - i];
        if (digit && !BN_mod_mul_montgomery(r, r, g_table[i][digit], srp_mont, bn_ctx)) fail("BN_mod_mul_montgomery");
    }
    if (!BN_from_montgomery(r, r, srp_mont, bn_ctx)) fail("BN_from_montgomery");
}

/* Is v a trivial group element or not below N (srp.py's _check_public)? */
static int srp_bad_public(const BIGNUM *v) {
    return BN_cmp(v, srp_n) >= 0 || BN_is_zero(v) || BN_is_one(v) || BN_cmp(v, srp_n1) == 0;
}

/* ASAP_AUTH_SRP_CHALLENGE (s, PAD(B)): fill the second write with PAD(A) and
 * M1 and keep M2 (srp.py's SrpClientRun.process_challenge).  0 or -1. */
static int srp_challenge(slot_t *s, ident_t *id, const unsigned char *m, size_t mlen) {
    bytes_t salt, bpad;
    if (param(m, mlen, PARAM_SRP_SALT, &salt) != 1 || param(m, mlen, PARAM_SRP_PUBLIC, &bpad) != 1 ||
        bpad.len != SRP_LEN) {
        err_unexpected++;
        return -1;
    }
    if (salt.len != id->salt.len || memcmp(salt.p, id->salt.p, salt.len))
        return auth_error("the registrar's salt is not the script's");
    if (!BN_bin2bn(bpad.p, SRP_LEN, bn_B)) fail("BN_bin2bn");
    if (srp_bad_public(bn_B)) return auth_error("bad SRP B");
    unsigned char a[EPHEMERAL_LEN], apad[SRP_LEN], h[HASH_LEN], spad[SRP_LEN], key[HASH_LEN], m1[HASH_LEN];
    do { /* a: 256 random bits, not 0 */
        if (RAND_bytes(a, sizeof a) != 1) fail("RAND_bytes");
        if (!BN_bin2bn(a, sizeof a, bn_a)) fail("BN_bin2bn");
    } while (BN_is_zero(bn_a));
    g_pow(bn_A, a); /* A = g^a */
    if (srp_bad_public(bn_A)) return auth_error("bad SRP A");
    if (BN_bn2binpad(bn_A, apad, SRP_LEN) != SRP_LEN) fail("BN_bn2binpad");
    SHA256_OF(h, B(apad, SRP_LEN), bpad); /* u = H(PAD(A) | PAD(B)) */
    if (!BN_bin2bn(h, sizeof h, bn_u)) fail("BN_bin2bn");
    if (BN_is_zero(bn_u)) return auth_error("SRP u is zero");
    /* S = (B - k*g^x) ^ (a + u*x) mod N, constant time in the exponent as srp.py */
    if (!BN_mod_sub(bn_base, bn_B, id->kgx, srp_n, bn_ctx) || !BN_mul(bn_e, bn_u, id->x, bn_ctx) ||
        !BN_add(bn_e, bn_e, bn_a))
        fail("BN arithmetic");
    if (!BN_mod_exp_mont_consttime(bn_s, bn_base, bn_e, srp_n, bn_ctx, srp_mont)) fail("BN_mod_exp_mont_consttime");
    if (BN_bn2binpad(bn_s, spad, SRP_LEN) != SRP_LEN) fail("BN_bn2binpad");
    SHA256_OF(key, B(spad, SRP_LEN)); /* K = H(PAD(S)) */
    /* M1 = H(H(N) xor H(PAD(g)) | H(I) | s | PAD(A) | PAD(B) | K | cb) */
    SHA256_OF(m1, B(srp_hng, HASH_LEN), B(id->hi, HASH_LEN), id->salt, B(apad, SRP_LEN), bpad, B(key, HASH_LEN),
           B(s->cb, CB_LEN));
    /* M2 = H(PAD(A) | M1 | K | cb) */
    SHA256_OF(s->m2, B(apad, SRP_LEN), B(m1, HASH_LEN), B(key, HASH_LEN), B(s->cb, CB_LEN));
    memcpy(s->second, id->tmpl.p, id->tmpl.len);
    memcpy(s->second + id->off1, apad, SRP_LEN);
    memcpy(s->second + id->off2, m1, HASH_LEN);
    return 0;
}

/* ASAP_AUTH_CHAP_CHALLENGE (identifier, nonce): fill the second write with
 * the identifier and MD5(identifier | secret | challenge) (chap.py).  0 or -1. */
static int chap_challenge(slot_t *s, ident_t *id, const unsigned char *m, size_t mlen) {
    bytes_t value;
    if (param(m, mlen, PARAM_CHAP_CHALLENGE, &value) != 1 || value.len != 4 + CHAP_NONCE_LEN) {
        err_unexpected++;
        return -1;
    }
    unsigned char identifier = value.p[0], msg[sizeof CHAP_LABEL - 1 + CHAP_NONCE_LEN], mac[EVP_MAX_MD_SIZE];
    unsigned char response[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    /* challenge = HMAC-SHA256(key = cb, "rserpool CHAP challenge" | nonce)[:16] */
    memcpy(msg, CHAP_LABEL, sizeof CHAP_LABEL - 1);
    memcpy(msg + sizeof CHAP_LABEL - 1, value.p + 4, CHAP_NONCE_LEN);
    if (!HMAC(md_sha256, s->cb, CB_LEN, msg, sizeof msg, mac, &maclen) || maclen != HASH_LEN) fail("HMAC");
    digest(md_md5, response, 3, (bytes_t[]){B(&identifier, 1), id->secret, B(mac, CHAP_CHALLENGE_LEN)});
    memcpy(s->second, id->tmpl.p, id->tmpl.len);
    s->second[id->off1] = identifier;
    memcpy(s->second + id->off2, response, CHAP_RESPONSE_LEN);
    return 0;
}

/* One ASAP message (m, mlen) from the registrar: 1 the session is complete,
 * 0 read on, 2 the second write is ready, -1 error (counted). */
static int message(slot_t *s, const unsigned char *m, size_t mlen) {
    ident_t *id = &idents[s->ident];
    size_t length = mlen >= 4 ? ((size_t)m[2] << 8) | m[3] : 0;
    if (length < 4 || length > mlen) { err_unexpected++; return -1; }
    mlen = length;
    unsigned type = m[0];
    if (type == ASAP_AUTH_FAILURE) return auth_error("ASAP_AUTH_FAILURE");
    if (id->kind == K_CERT || s->phase == P_RESULT) {
        if (type == ASAP_AUTH_SUCCESS && id->kind != K_CERT && !s->succeeded) {
            bytes_t mech, proof;
            int has_proof = param(m, mlen, PARAM_SRP_PROOF, &proof);
            if (param(m, mlen, PARAM_AUTH_MECHANISM, &mech) != 1 || mech.len != id->mech.len ||
                memcmp(mech.p, id->mech.p, mech.len) || has_proof < 0)
                return auth_error("ASAP_AUTH_SUCCESS for another mechanism");
            if (id->kind == K_SRP &&
                (has_proof != 1 || proof.len != HASH_LEN || CRYPTO_memcmp(proof.p, s->m2, HASH_LEN)))
                return auth_error("the registrar's M2 does not verify");
            if (id->kind == K_CHAP && has_proof) return auth_error("ASAP_AUTH_SUCCESS with a proof for CHAP");
            s->succeeded = 1;
            return 0;
        }
        if (type != ASAP_REGISTRATION_RESPONSE || (id->kind != K_CERT && !s->succeeded)) {
            err_unexpected++;
            return -1;
        }
        if (m[1] & 1) { err_rejected++; return -1; }
        return 1;
    }
    /* SRP/CHAP, before the challenge */
    if (type == ASAP_AUTH_OFFER && !s->offered) {
        if (!offers(m, mlen, id->mech)) return auth_error("the offer lacks the mechanism");
        s->offered = 1;
        return 0;
    }
    if (s->offered && ((id->kind == K_SRP && type == ASAP_AUTH_SRP_CHALLENGE) ||
                       (id->kind == K_CHAP && type == ASAP_AUTH_CHAP_CHALLENGE))) {
        if ((id->kind == K_SRP ? srp_challenge : chap_challenge)(s, id, m, mlen) < 0) return -1;
        s->phase = P_RESULT;
        return 2;
    }
    err_unexpected++;
    return -1;
}

/* The chunks read so far: 1 session complete, 0 need more, 2 the second write
 * is ready (the chunks after it stay in the buffer), -1 error. */
static int parse(slot_t *s) {
    size_t off = 0;
    int result = 0;
    while (result == 0 && s->inlen - off >= 4) {
        unsigned char *p = s->in + off;
        size_t len = ((size_t)p[2] << 8) | p[3];
        if (len < 4) return -1;
        size_t total = (len + 3) & ~(size_t)3;
        if (s->inlen - off < total) break;
        if (p[0] == CHUNK_INIT) {
            s->server_omit = p[1] & 7;
        } else if (p[0] == CHUNK_DATA) {
            size_t h = data_header_size(s->server_omit);
            if (len < h + 4) { err_unexpected++; return -1; }
            result = message(s, p + h, len - h);
            if (result < 0 || result == 1) return result;
        }
        off += total;
    }
    if (off) {
        memmove(s->in, s->in + off, s->inlen - off);
        s->inlen -= off;
    }
    return result;
}

/* SSL_* returned r <= 0: 1 if waiting (events set), else the error is counted
 * in *counter, the session ended, 0 */
static int wait_or_fail(slot_t *s, int r, uint64_t *counter) {
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) { set_events(s, EPOLLIN); return 1; }
    if (e == SSL_ERROR_WANT_WRITE) { set_events(s, EPOLLOUT); return 1; }
    (*counter)++;
    if (counter == &err_handshake && err_handshake < 3) ERR_print_errors_fp(stderr);
    ERR_clear_error();
    finish(s, 0);
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
            if (r != 1) { wait_or_fail(s, r, &err_handshake); return; }
            if (idents[s->ident].kind != K_CERT &&
                SSL_export_keying_material(s->ssl, s->cb, CB_LEN, EXPORTER_LABEL, sizeof EXPORTER_LABEL - 1, NULL,
                                           0, 0) != 1) {
                auth_error("SSL_export_keying_material");
                ERR_clear_error();
                finish(s, 0);
                return;
            }
            s->state = S_SENDING;
        } else if (s->state == S_SENDING) {
            int r = SSL_write(s->ssl, s->out + s->sent, (int)(s->outlen - s->sent));
            if (r <= 0) { wait_or_fail(s, r, &err_io); return; }
            s->sent += (size_t)r;
            if (s->sent == s->outlen) s->state = S_READING;
        } else if (s->state == S_READING) {
            int done = parse(s); /* first what is left from before the second write */
            if (done == 0) {
                int r = SSL_read(s->ssl, s->in + s->inlen, (int)(INBUF - s->inlen));
                if (r <= 0) { wait_or_fail(s, r, &err_io); return; }
                s->inlen += (size_t)r;
                done = parse(s);
            }
            if (done < 0) { finish(s, 0); return; }
            if (done == 1) {
                done_total++;
                if (measuring) {
                    done_window++;
                    if (SSL_session_reused(s->ssl)) resumed_window++;
                }
                finish(s, 1);
                return;
            }
            if (done == 2) {
                ident_t *id = &idents[s->ident];
                s->out = s->second;
                s->outlen = id->tmpl.len;
                s->sent = 0;
                s->state = S_SENDING;
            } else if (s->inlen >= INBUF) {
                err_io++;
                finish(s, 0);
                return;
            }
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
    md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    md_md5 = EVP_MD_fetch(NULL, "MD5", NULL);
    md_ctx = EVP_MD_CTX_new();
    if (!md_sha256 || !md_md5 || !md_ctx) fail("fetching SHA-256 and MD5");
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
           "\"handshake\": %llu, \"io\": %llu, \"rejected\": %llu, \"auth\": %llu, \"unexpected\": %llu}}\n",
           win_end - win_start, (unsigned long long)done_window, (unsigned long long)done_total,
           (unsigned long long)resumed_window, user1 - user0, sys1 - sys0, nslots,
           (unsigned long long)err_connect, (unsigned long long)err_handshake, (unsigned long long)err_io,
           (unsigned long long)err_rejected, (unsigned long long)err_auth, (unsigned long long)err_unexpected);
    return 0;
}
