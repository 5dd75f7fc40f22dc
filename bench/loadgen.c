/* Load generator and sink for bench/relay.py.
 *
 * Sends RTP-class datagrams (first byte 0x80) carrying a CLOCK_MONOTONIC send time in their last 8 bytes,
 * from SRC_PORT to TARGET, at RATE packets/s (0 = as fast as sendmmsg goes) for DURATION seconds, and
 * receives on SINK_PORT whatever arrives (through a forwarder, possibly with a header in front), timing it.
 * Prints one JSON line: sent, received, latency percentiles in microseconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/prctl.h>
#include <unistd.h>

#define BATCH 64
#define MAXLAT 4000000

static int sink_fd;
static volatile int stop_rx;
static uint64_t received;
static uint64_t *lat;
static size_t nlat;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void *rx(void *arg) {
    (void)arg;
    static char bufs[BATCH][2048];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct timeval tv = {0, 100000};
    setsockopt(sink_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (!stop_rx) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof(bufs[i]);
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(sink_fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        uint64_t t = now_ns();
        for (int i = 0; i < n; i++) {
            unsigned len = msgs[i].msg_len;
            if (len < 8) continue;
            uint64_t sent;
            memcpy(&sent, bufs[i] + len - 8, 8);
            if (nlat < MAXLAT && t > sent) lat[nlat++] = t - sent;
            received++;
        }
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (!nlat) return -1;
    size_t i = (size_t)(p * (nlat - 1));
    return lat[i] / 1000.0;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: loadgen TARGET_IP TARGET_PORT SRC_PORT SINK_PORT RATE DURATION SIZE [LOCAL_IP]\n");
        return 2;
    }
    const char *tip = argv[1];
    int tport = atoi(argv[2]), sport = atoi(argv[3]), kport = atoi(argv[4]);
    double rate = atof(argv[5]), duration = atof(argv[6]);
    int size = atoi(argv[7]);
    if (size < 16 || size > 1400) size = 200;
    lat = malloc(sizeof(uint64_t) * MAXLAT);
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0); /* 1 us timer slack for pacing */

    int tx = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20;
    setsockopt(tx, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(sport)};
    inet_pton(AF_INET, argc > 8 ? argv[8] : "127.0.0.1", &a.sin_addr);
    if (bind(tx, (struct sockaddr *)&a, sizeof(a)) < 0) { perror("bind src"); return 1; }
    sink_fd = socket(AF_INET, SOCK_DGRAM, 0);
    setsockopt(sink_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    a.sin_port = htons(kport);
    if (bind(sink_fd, (struct sockaddr *)&a, sizeof(a)) < 0) { perror("bind sink"); return 1; }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(tport)};
    inet_pton(AF_INET, tip, &dst.sin_addr);

    pthread_t th;
    pthread_create(&th, NULL, rx, NULL);

    static char pkts[BATCH][1500];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        memset(pkts[i], 'v', size);
        pkts[i][0] = (char)0x80;
        pkts[i][1] = 111;
        iov[i].iov_base = pkts[i];
        iov[i].iov_len = size;
        memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &dst;
        msgs[i].msg_hdr.msg_namelen = sizeof(dst);
    }
    uint64_t start = now_ns(), end = start + (uint64_t)(duration * 1e9), sent = 0;
    /* paced: bursts of `burst` every `gap` ns; unpaced: full batches back to back */
    int burst = rate > 0 ? (int)(rate / 10000.0) : BATCH;
    if (burst < 1) burst = 1;
    if (burst > BATCH) burst = BATCH;
    uint64_t gap = rate > 0 ? (uint64_t)(burst * 1e9 / rate) : 0, next = start;
    for (;;) {
        uint64_t t = now_ns();
        if (t >= end) break;
        if (gap) {
            if (t < next) {
                /* sleep, never spin: the sink thread shares this CPU */
                struct timespec ts = {(time_t)(next / 1000000000ull), (long)(next % 1000000000ull)};
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
                continue;
            }
            next += gap;
        }
        t = now_ns();
        for (int i = 0; i < burst; i++) memcpy(pkts[i] + size - 8, &t, 8);
        int n = sendmmsg(tx, msgs, burst, 0);
        if (n > 0) sent += n;
    }
    usleep(300000);
    stop_rx = 1;
    pthread_join(th, NULL);
    qsort(lat, nlat, sizeof(uint64_t), cmp);
    printf("{\"sent\": %llu, \"received\": %llu, \"seconds\": %.3f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f}\n",
           (unsigned long long)sent, (unsigned long long)received, duration, pct(0.5), pct(0.99), pct(0.999));
    return 0;
}
