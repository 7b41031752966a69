/*
 * benchgen.h: what the two C load generators (loadgen.c, sessgen.c) share:
 * clocks, exiting on errors, the server's CPU accounting at the window
 * boundaries, reading the binary script and the TCP mapping's DATA header.
 *
 * Define BENCH_PROG (the program's name, the prefix of its error messages)
 * before including it; being a header of static functions it is compiled
 * into each generator, so the gcc command lines name only the .c file.
 */
#ifndef BENCHGEN_H
#define BENCHGEN_H

#ifndef BENCH_PROG
#error "define BENCH_PROG (the generator's name) before including benchgen.h"
#endif

#include <dirent.h>
#include <errno.h>
#include <openssl/err.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* -- clocks and errors ------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The generator's own CPU (getrusage), user and system; returns their sum. */
static double cpu_s(double *user, double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    *sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    return *user + *sys;
}

/* A system call failed: its errno, then OpenSSL's error queue; exit 2. */
static void die(const char *what) {
    fprintf(stderr, BENCH_PROG ": %s: %s\n", what, strerror(errno));
    ERR_print_errors_fp(stderr);
    exit(2);
}

/* Anything else: the message, then OpenSSL's error queue; exit 2. */
static void fail(const char *what) {
    fprintf(stderr, BENCH_PROG ": %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

/* -- server CPU accounting -------------------------------------------------------- */

/* CPU time (ns) of all of the threads of process pid, from their schedstat; -1 if gone. */
static long long server_cpu_ns(int pid) {
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *dir = opendir(path);
    if (!dir) return -1;
    long long total = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        char file[384];
        snprintf(file, sizeof file, "/proc/%d/task/%s/schedstat", pid, entry->d_name);
        FILE *f = fopen(file, "r");
        if (!f) continue;
        long long ns;
        if (fscanf(f, "%lld", &ns) == 1) total += ns;
        fclose(f);
    }
    closedir(dir);
    return total;
}

/* busy and total jiffies of cpu0 and cpu1 from /proc/stat (-1 where unknown) */
static void cpu_jiffies(long long busy[2], long long total[2]) {
    busy[0] = busy[1] = total[0] = total[1] = -1;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        int cpu;
        long long v[8];
        if (sscanf(line, "cpu%d %lld %lld %lld %lld %lld %lld %lld %lld", &cpu, &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) == 9 && cpu >= 0 && cpu < 2) {
            long long sum = 0;
            for (int i = 0; i < 8; i++) sum += v[i];
            total[cpu] = sum;
            busy[cpu] = sum - v[3] - v[4];
        }
    }
    fclose(f);
}

/*
 * A window boundary line on stdout, read at the moment it is printed:
 * "WORD NAME SERVER_NS BUSY0 TOTAL0 BUSY1 TOTAL1" (SERVER_NS -1 without a
 * pid), the format bench_registrar.py's Boundary parses.
 */
static void cpu_boundary(const char *word, const char *name, int pid) {
    long long busy[2], total[2];
    long long ns = pid ? server_cpu_ns(pid) : -1;
    cpu_jiffies(busy, total);
    printf("%s %s %lld %lld %lld %lld %lld\n", word, name, ns, busy[0], total[0], busy[1], total[1]);
    fflush(stdout);
}

/* -- the binary script (big-endian) ----------------------------------------------------- */

static unsigned char *script;
static size_t script_len, script_pos;

static void need(size_t n) {
    if (script_len - script_pos < n) fail("script truncated");
}
static uint32_t rd32(void) {
    need(4);
    unsigned char *p = script + script_pos;
    script_pos += 4;
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint16_t rd16(void) {
    need(2);
    unsigned char *p = script + script_pos;
    script_pos += 2;
    return (uint16_t)((p[0] << 8) | p[1]);
}
/* u16 length, then that many bytes: a new NUL-terminated string */
static char *rdstr(void) {
    uint16_t n = rd16();
    need(n);
    char *s = malloc(n + 1);
    memcpy(s, script + script_pos, n);
    s[n] = 0;
    script_pos += n;
    return s;
}

/* Reads the whole file into script and checks its magic and that its
 * version is 1..max_version; script_pos is then just past them.  Returns
 * the version. */
static uint32_t read_script(const char *path, const char magic[4], uint32_t max_version) {
    FILE *f = fopen(path, "rb");
    if (!f) die("open script");
    fseek(f, 0, SEEK_END);
    script_len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    script = malloc(script_len);
    if (fread(script, 1, script_len, f) != script_len) die("read script");
    fclose(f);
    need(4);
    if (memcmp(script, magic, 4) != 0) fail("not a " BENCH_PROG " script");
    script_pos = 4;
    uint32_t version = rd32();
    if (version < 1 || version > max_version) fail("unknown script version");
    return version;
}

/* -- the TCP mapping -------------------------------------------------------------- */

/* The header size of a DATA chunk from a peer whose INIT flags are omit. */
static size_t data_header_size(int omit) {
    size_t n = 4;
    if (!(omit & 1)) n += 4;
    if (!(omit & 2)) n += 4;
    if (!(omit & 4)) n += 4;
    return n;
}

#endif
