/*
 * mdpbench: the floor of CareMesh's wire protocol in C — MDP/0.2 ("delimited" dialect,
 * ../../../shared/WIRE.md) with CareMesh's protobuf headers, on libzmq, with nothing else.
 *
 * The peers' zmq-c harness (`zmqbench -m rr`) measures a broker hop with 2 or 3 frames per
 * message. MDP needs 6 to 8 (empty delimiter, protocol, command, service or client address,
 * header, body), and CareMesh a header per request and reply. This harness runs the same
 * closed loop with the same frames, the same headers and the same Echo messages as
 * `caremesh bench rpc`, so each of its roles can stand in for ours:
 *
 *   mdpbench all     -p PORT ...   C client -> C broker -> C workers (the protocol's floor)
 *   mdpbench broker  -p PORT       a minimal MDP broker: ROUTER front on PORT, back on PORT+1
 *   mdpbench workers -e ENDPOINT   W worker threads serving "bench" Echo (READY with a
 *                                  WorkerInfo of capacity 1000, heartbeats every second)
 *   mdpbench client  -e ENDPOINT   C clients against any MDP/0.2 broker (ours: `router`)
 *
 * The broker does what an MDP broker must per message: read the command, pick a worker
 * (round robin; it does not parse headers, check authorization, track deadlines or queue),
 * and rewrite the envelope. Workers read the request id from the header and answer
 * [ResponseHeader{request_id}][the request's body] (EchoRequest and EchoResponse share
 * field 1, `payload`). Clients send RequestHeader{method, request_id, timeout_ms,
 * metadata{traceparent}} and a 64-byte EchoRequest; the request id carries the send time,
 * so each reply gives its round trip.
 *
 * Build: cc -O2 -Wall -o mdpbench scripts/bench/mdpbench.c -lzmq -lpthread
 * Options: -c clients -i inflight_per_client -w workers -d seconds -W warmup -p port -e endpoint
 */
#define _GNU_SOURCE
#include <zmq.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 64
#define METHOD "/caremesh.bench.v1.Bench/Echo"
#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int g_port = 27575;
static const char *g_endpoint = NULL;
static int g_clients = 4, g_inflight = 16, g_workers = 2;
static double g_warmup = 1.0, g_duration = 6.0;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "mdpbench: %s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

/* ---------------- protobuf wire bits ---------------- */

static size_t put_varint(unsigned char *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (unsigned char)(v | 0x80); v >>= 7; }
    p[n++] = (unsigned char)v;
    return n;
}

static size_t put_bytes(unsigned char *p, unsigned field, const void *b, size_t len) {
    size_t n = put_varint(p, (uint64_t)field << 3 | 2);
    n += put_varint(p + n, len);
    memcpy(p + n, b, len);
    return n + len;
}

/* The varint field `field` of a message, or 0; `*found` says whether `field` occurs at all
 * (only varint and length-delimited fields occur here). */
static uint64_t find_field(const unsigned char *p, size_t len, unsigned field, int *found) {
    *found = 0;
    size_t i = 0;
    while (i < len) {
        uint64_t key = 0, v = 0;
        for (int s = 0; i < len; s += 7) { key |= (uint64_t)(p[i] & 0x7F) << s; if (p[i++] < 0x80) break; }
        if ((key & 7) == 0) {
            for (int s = 0; i < len; s += 7) { v |= (uint64_t)(p[i] & 0x7F) << s; if (p[i++] < 0x80) break; }
            if (key >> 3 == field) { *found = 1; return v; }
        } else if ((key & 7) == 2) {
            for (int s = 0; i < len; s += 7) { v |= (uint64_t)(p[i] & 0x7F) << s; if (p[i++] < 0x80) break; }
            if (key >> 3 == field) { *found = 1; return 0; }
            i += v;
        } else {
            return 0;
        }
    }
    return 0;
}

static uint64_t get_varint_field(const unsigned char *p, size_t len, unsigned field) {
    int found;
    return find_field(p, len, field, &found);
}

/* ---------------- frames ---------------- */

static void send_frame(void *s, const void *b, size_t n, int more) {
    if (zmq_send(s, b, n, more ? ZMQ_SNDMORE : 0) < 0) die("send");
}

static void send_msg(void *s, zmq_msg_t *m, int more) {
    if (zmq_msg_send(m, s, more ? ZMQ_SNDMORE : 0) < 0) die("send");
}

/* Receives the rest of a message into `m` (up to `max` frames); returns the frame count. */
static int recv_all(void *s, zmq_msg_t *m, int max, int flags) {
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t extra, *into = n < max ? &m[n] : &extra;  /* frames past `max` are dropped */
        zmq_msg_init(into);
        if (zmq_msg_recv(into, s, n == 0 ? flags : 0) < 0) { zmq_msg_close(into); return n == 0 ? -1 : (n < max ? n : max); }
        more = zmq_msg_more(into);
        if (into == &extra) zmq_msg_close(&extra);
        n++;
    }
    return n < max ? n : max;
}

static void close_all(zmq_msg_t *m, int n) {
    for (int i = 0; i < n; i++) zmq_msg_close(&m[i]);
}

static int is(zmq_msg_t *m, const char *text, size_t n) {
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), text, n) == 0;
}

/* ---------------- broker ---------------- */

enum { MAXW = 64, MAXF = 16 };

/* Starts a message to worker `i`: its identity frame. A worker that is gone (ROUTER_MANDATORY
 * refuses the send) is forgotten, the last one taking its place; returns 0 then. */
static int address_worker(void *back, zmq_msg_t *wid, int *nw, int i) {
    zmq_msg_t w;
    zmq_msg_init(&w);
    zmq_msg_copy(&w, &wid[i]);
    if (zmq_msg_send(&w, back, ZMQ_SNDMORE) >= 0) return 1;
    zmq_msg_close(&w);
    zmq_msg_close(&wid[i]);
    wid[i] = wid[--*nw];
    return 0;
}

static void run_broker(void) {
    void *ctx = zmq_ctx_new();
    void *front = zmq_socket(ctx, ZMQ_ROUTER), *back = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, hwm = 100000;
    zmq_setsockopt(front, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(back, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(front, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(back, ZMQ_SNDHWM, &hwm, sizeof hwm);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", g_port);
    if (zmq_bind(front, ep) != 0) die("front bind");
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", g_port + 1);
    if (zmq_bind(back, ep) != 0) die("back bind");

    zmq_msg_t wid[MAXW];
    int nw = 0, next = 0;
    uint64_t last_beat = now_ns();
    zmq_pollitem_t items[2] = {{back, 0, ZMQ_POLLIN, 0}, {front, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        if (zmq_poll(items, 2, 250) < 0) die("poll");
        /* Heartbeats to every worker once a second, as an MDP broker must. */
        if (now_ns() - last_beat > 1000000000ull) {
            last_beat = now_ns();
            for (int i = 0; i < nw; i++) {
                if (!address_worker(back, wid, &nw, i)) { i--; next = 0; continue; }
                send_frame(back, "", 0, 1);
                send_frame(back, "MDPW02", 6, 1);
                send_frame(back, "\x05", 1, 0);
            }
        }
        for (int batch = 0; batch < 256 && (items[0].revents & ZMQ_POLLIN); batch++) {
            /* [worker] "" MDPW02 cmd ... */
            zmq_msg_t m[MAXF];
            int n = recv_all(back, m, MAXF, ZMQ_DONTWAIT);
            if (n < 0) break;
            if (n >= 4 && is(&m[3], "\x04", 1) && n >= 8) {
                /* FINAL: [w] "" MDPW02 0x04 client "" rh body -> [client] "" MDPC02 0x04 rh body */
                if (zmq_msg_send(&m[4], front, ZMQ_SNDMORE) < 0) {
                    close_all(m, n);  /* that client is gone (ROUTER_MANDATORY): drop its reply */
                    continue;
                }
                send_frame(front, "", 0, 1);
                send_frame(front, "MDPC02", 6, 1);
                send_frame(front, "\x04", 1, 1);
                for (int i = 6; i < n; i++) send_msg(front, &m[i], i < n - 1);
                close_all(m, 6);
            } else if (n >= 5 && is(&m[3], "\x01", 1)) {
                if (nw < MAXW) { zmq_msg_init(&wid[nw]); zmq_msg_copy(&wid[nw], &m[0]); nw++; }
                close_all(m, n);
            } else {
                close_all(m, n);  /* heartbeats and the like */
            }
        }
        for (int batch = 0; batch < 256 && nw > 0 && (items[1].revents & ZMQ_POLLIN); batch++) {
            /* [client] "" MDPC02 0x02 service rh body -> [w] "" MDPW02 0x02 client "" rh body */
            zmq_msg_t m[MAXF];
            int n = recv_all(front, m, MAXF, ZMQ_DONTWAIT);
            if (n < 0) break;
            if (n < 7 || !is(&m[2], "MDPC02", 6) || !is(&m[3], "\x02", 1)) { close_all(m, n); continue; }
            if (!address_worker(back, wid, &nw, next)) {  /* that worker is gone: drop the request */
                next = 0;
                close_all(m, n);
                continue;
            }
            next = (next + 1) % nw;
            send_frame(back, "", 0, 1);
            send_frame(back, "MDPW02", 6, 1);
            send_frame(back, "\x02", 1, 1);
            send_msg(back, &m[0], 1);
            send_frame(back, "", 0, 1);
            for (int i = 5; i < n; i++) send_msg(back, &m[i], i < n - 1);
            close_all(m, 5);
        }
    }
}

/* ---------------- workers ---------------- */

static void *worker_thread(void *arg) {
    void *ctx = arg;
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int hwm = 100000;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_connect(s, g_endpoint) != 0) die("worker connect");
    unsigned char info[8];
    size_t info_n = 0;
    info[info_n++] = 3 << 3;  /* WorkerInfo.capacity */
    info_n += put_varint(info + info_n, 1000);
    send_frame(s, "", 0, 1);
    send_frame(s, "MDPW02", 6, 1);
    send_frame(s, "\x01", 1, 1);
    send_frame(s, "bench", 5, 1);
    send_frame(s, info, info_n, 0);
    uint64_t last_beat = now_ns();
    zmq_pollitem_t item = {s, 0, ZMQ_POLLIN, 0};
    for (;;) {
        if (zmq_poll(&item, 1, 250) < 0) die("worker poll");
        for (int batch = 0; batch < 256; batch++) {
            /* "" MDPW02 0x02 client "" rh body */
            zmq_msg_t m[16];
            int n = recv_all(s, m, 16, ZMQ_DONTWAIT);
            if (n < 0) break;
            if (n < 7 || !is(&m[2], "\x02", 1)) { close_all(m, n); continue; }
            uint64_t id = get_varint_field(zmq_msg_data(&m[5]), zmq_msg_size(&m[5]), 2);
            unsigned char rh[16];
            rh[0] = 1 << 3;  /* ResponseHeader.request_id */
            size_t rh_n = 1 + put_varint(rh + 1, id);
            send_frame(s, "", 0, 1);
            send_frame(s, "MDPW02", 6, 1);
            send_frame(s, "\x04", 1, 1);
            send_msg(s, &m[3], 1);
            send_frame(s, "", 0, 1);
            send_frame(s, rh, rh_n, 1);
            send_msg(s, &m[6], 0);
            close_all(m, 3);
            zmq_msg_close(&m[4]);
            zmq_msg_close(&m[5]);
        }
        if (now_ns() - last_beat > 1000000000ull) {
            last_beat = now_ns();
            send_frame(s, "", 0, 1);
            send_frame(s, "MDPW02", 6, 1);
            send_frame(s, "\x05", 1, 0);
        }
    }
    return NULL;
}

static void run_workers(void) {
    void *ctx = zmq_ctx_new();
    pthread_t t[64];
    int n = g_workers < 64 ? g_workers : 64;
    for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, worker_thread, ctx);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

/* ---------------- clients ---------------- */

typedef struct {
    void *ctx;
    uint64_t t_start, t_end;
    uint64_t *lat;
    size_t n, cap;
    uint64_t errors, last_id;
} client_t;

static void push_lat(client_t *c, uint64_t v) {
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1 << 16;
        c->lat = realloc(c->lat, c->cap * sizeof *c->lat);
        if (!c->lat) { perror("realloc"); exit(1); }
    }
    c->lat[c->n++] = v;
}

/* One request: "" MDPC02 0x02 bench RequestHeader EchoRequest; the request id is the send time. */
static void client_send(client_t *c, void *s, const unsigned char *body, size_t body_n) {
    uint64_t id = now_ns();
    if (id <= c->last_id) id = c->last_id + 1;
    c->last_id = id;
    unsigned char h[256], entry[128];
    size_t n = put_bytes(h, 1, METHOD, sizeof METHOD - 1);
    h[n++] = 2 << 3;
    n += put_varint(h + n, id);
    h[n++] = 3 << 3;
    n += put_varint(h + n, 10000);
    size_t e = put_bytes(entry, 1, "traceparent", 11);
    e += put_bytes(entry + e, 2, TRACEPARENT, sizeof TRACEPARENT - 1);
    n += put_bytes(h + n, 4, entry, e);
    send_frame(s, "", 0, 1);
    send_frame(s, "MDPC02", 6, 1);
    send_frame(s, "\x02", 1, 1);
    send_frame(s, "bench", 5, 1);
    send_frame(s, h, n, 1);
    send_frame(s, body, body_n, 0);
}

static void *client_thread(void *arg) {
    client_t *c = arg;
    void *s = zmq_socket(c->ctx, ZMQ_DEALER);
    int linger = 0, tmo = 5000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    if (zmq_connect(s, g_endpoint) != 0) die("client connect");
    unsigned char payload[PAYLOAD], body[PAYLOAD + 4];
    memset(payload, 'a', sizeof payload);
    size_t body_n = put_bytes(body, 1, payload, PAYLOAD);
    for (int i = 0; i < g_inflight; i++) client_send(c, s, body, body_n);
    for (;;) {
        /* "" MDPC02 0x04 ResponseHeader EchoResponse */
        zmq_msg_t m[8];
        int n = recv_all(s, m, 8, 0);
        uint64_t t = now_ns();
        if (n < 0) { c->errors++; fprintf(stderr, "client: no reply within 5 s\n"); break; }
        if (n < 5 || !is(&m[2], "\x04", 1)) { c->errors++; close_all(m, n); continue; }
        uint64_t sent = get_varint_field(zmq_msg_data(&m[3]), zmq_msg_size(&m[3]), 1);
        int status;
        find_field(zmq_msg_data(&m[3]), zmq_msg_size(&m[3]), 2, &status);
        if (status || zmq_msg_size(&m[4]) == 0) c->errors++;  /* a status (an error), or no message */
        close_all(m, n);
        if (t >= c->t_start && t < c->t_end) push_lat(c, t - sent);
        if (t >= c->t_end) break;
        client_send(c, s, body, body_n);
    }
    zmq_close(s);
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double p) {
    if (n == 0) return 0;
    size_t i = (size_t)(p / 100.0 * (double)n);
    return (double)v[i < n ? i : n - 1] / 1000.0;
}

static void run_clients(const char *label) {
    void *ctx = zmq_ctx_new();
    client_t *cs = calloc((size_t)g_clients, sizeof *cs);
    pthread_t *t = calloc((size_t)g_clients, sizeof *t);
    uint64_t start = now_ns() + (uint64_t)(g_warmup * 1e9);
    for (int i = 0; i < g_clients; i++) {
        cs[i].ctx = ctx;
        cs[i].t_start = start;
        cs[i].t_end = start + (uint64_t)(g_duration * 1e9);
        pthread_create(&t[i], NULL, client_thread, &cs[i]);
    }
    size_t total = 0;
    uint64_t errors = 0;
    for (int i = 0; i < g_clients; i++) { pthread_join(t[i], NULL); total += cs[i].n; errors += cs[i].errors; }
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < g_clients; i++) { memcpy(all + k, cs[i].lat, cs[i].n * sizeof *all); k += cs[i].n; }
    qsort(all, total, sizeof *all, cmp_u64);
    printf("mdpbench %s: clients=%d inflight_per_client=%d concurrency=%d payload=%dB duration_s=%.1f requests=%zu "
           "rps=%.0f p50_us=%.1f p99_us=%.1f errors=%llu\n",
           label, g_clients, g_inflight, g_clients * g_inflight, PAYLOAD, g_duration, total, (double)total / g_duration,
           pct(all, total, 50), pct(all, total, 99), (unsigned long long)errors);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: mdpbench all|broker|workers|client [-c clients] [-i inflight] [-w workers] "
                        "[-d seconds] [-W warmup] [-p port] [-e endpoint]\n");
        return 2;
    }
    const char *role = argv[1];
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "c:i:w:d:W:p:e:")) != -1) {
        switch (opt) {
        case 'c': g_clients = atoi(optarg); break;
        case 'i': g_inflight = atoi(optarg); break;
        case 'w': g_workers = atoi(optarg); break;
        case 'd': g_duration = atof(optarg); break;
        case 'W': g_warmup = atof(optarg); break;
        case 'p': g_port = atoi(optarg); break;
        case 'e': g_endpoint = optarg; break;
        default: return 2;
        }
    }
    static char front[64], back[64];
    snprintf(front, sizeof front, "tcp://127.0.0.1:%d", g_port);
    snprintf(back, sizeof back, "tcp://127.0.0.1:%d", g_port + 1);
    if (strcmp(role, "broker") == 0) { run_broker(); return 0; }
    if (strcmp(role, "workers") == 0) { if (!g_endpoint) g_endpoint = back; run_workers(); return 0; }
    if (strcmp(role, "client") == 0) { if (!g_endpoint) g_endpoint = front; run_clients("client"); return 0; }
    if (strcmp(role, "all") != 0) { fprintf(stderr, "mdpbench: unknown role %s\n", role); return 2; }
    /* all: broker and workers in child processes (forked before any zmq context), clients here */
    pid_t b = fork();
    if (b == 0) { run_broker(); _exit(0); }
    pid_t w = fork();
    if (w == 0) { g_endpoint = back; run_workers(); _exit(0); }
    usleep(300000);
    g_endpoint = front;
    run_clients("all");
    kill(b, SIGTERM);
    kill(w, SIGTERM);
    waitpid(b, NULL, 0);
    waitpid(w, NULL, 0);
    return 0;
}
