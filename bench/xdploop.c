/* A closed-loop load for bench/relay.py --xdp: the generator and sink of a forwarder, costing the machine as little
 * per packet as the kernel path they measure (its kernel half: xdploop.bpf.c).
 *
 * The socket generator (loadgen.c) spends more of the machine per packet than the XDP relay does: a sendmmsg through
 * UDP and IP for each datagram, a receive through the stack for each forwarded one. Here the forwarder's output is
 * its next input: an XDP program on the generator's veth turns each datagram the forwarder sent to SINK_PORT back
 * into the client's next datagram to DST_IP:DST_PORT (XDP_TX), so INFLIGHT datagrams, sent once from a UDP socket,
 * circulate client -> forwarder -> "transceiver" -> client for as long as the run lasts. Every forwarder meets the
 * same loop; what the loop costs shows on the generator's CPU, which the whole machine's figure includes.
 *
 *   xdploop OBJ IFACE DST_MAC SRC_IP SRC_PORT DST_IP DST_PORT SINK_PORT SIZE INFLIGHT WARMUP_S SECONDS [FLOWS]
 *
 * With FLOWS (default 1) the clients are SRC_PORT .. SRC_PORT + FLOWS - 1: each datagram comes back as the next
 * port's, so the relay's flow table is looked up across all of them (it must hold them all).
 *
 * Native XDP only: a forwarder in generic (skb) mode cannot receive the frames a native XDP_TX sends it, and with the
 * loop in generic mode too, each datagram would go round inside one softirq as the same skb, never freed.
 *
 * Attached, it prints {"attached": …} and waits for a line on stdin (the caller pins the veths' NAPI threads, which
 * attaching made anew); then it sends the INFLIGHT datagrams, and after WARMUP_S prints {"start": …} and after SECONDS
 * more {"end": …} (CLOCK_MONOTONIC seconds, the datagrams forwarded in between), so the caller can read the CPU
 * counters at the same moments. Then it stops the loop and prints what came back after: INFLIGHT of them unless the
 * loop lost some on the way (then the count is not the forwarder's whole throughput), and how many came back wrong
 * (a bad length or header) over the run. It leaves the `pass` program on IFACE. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDRS 42

struct loopcfg {
    uint16_t sink_port, armed, udp_len, flows, first_port, pad;
    uint8_t hdrs[HDRS];
    uint8_t pad2[2];
};

static int the_ifindex, the_pass;

static void restore(int sig) {
    (void)sig;
    bpf_xdp_attach(the_ifindex, the_pass, XDP_FLAGS_DRV_MODE, NULL);
    _exit(3);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t sum16(const void *p, size_t n, uint32_t s) {
    const uint8_t *b = p;
    for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t)(b[i] << 8 | b[i + 1]);
    if (n & 1) s += (uint32_t)(b[n - 1] << 8);
    return s;
}

static uint16_t fold(uint32_t s) {
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static int mac(const char *text, uint8_t out[6]) {
    return sscanf(text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &out[0], &out[1], &out[2], &out[3], &out[4], &out[5]) == 6
               ? 0 : -1;
}

static uint64_t counted(int map, int ncpu, uint32_t which) {
    uint64_t per[ncpu], n = 0;
    if (!bpf_map_lookup_elem(map, &which, per))
        for (int i = 0; i < ncpu; i++) n += per[i];
    return n;
}

int main(int argc, char **argv) {
    if (argc != 13 && argc != 14) {
        fprintf(stderr, "usage: xdploop OBJ IFACE DST_MAC SRC_IP SRC_PORT DST_IP DST_PORT SINK_PORT SIZE INFLIGHT "
                        "WARMUP_S SECONDS [FLOWS]\n");
        return 2;
    }
    const char *ifname = argv[2];
    int ifindex = if_nametoindex(ifname), size = atoi(argv[9]), inflight = atoi(argv[10]);
    double warmup = atof(argv[11]), seconds = atof(argv[12]);
    uint16_t sport = atoi(argv[5]), dport = atoi(argv[7]), kport = atoi(argv[8]);
    if (size < 16 || size > 1400) size = 200;
    int flows = argc == 14 ? atoi(argv[13]) : 1;
    if (flows < 1 || flows > 65535 - sport) flows = 1;
    struct loopcfg c = {.sink_port = htons(kport), .armed = 1, .udp_len = 8 + 8 + size, .flows = flows,
                        .first_port = sport};
    char path[128], text[64] = "";
    snprintf(path, sizeof(path), "/sys/class/net/%s/address", ifname);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(text, sizeof(text), f)) text[0] = 0;
        fclose(f);
    }
    if (!ifindex || mac(argv[3], c.hdrs) || mac(text, c.hdrs + 6)) {
        fprintf(stderr, "xdploop: no interface %s, or a bad MAC\n", ifname);
        return 2;
    }

    /* the client's datagram: its payload is what the socket below sends, and never changes on the way round */
    uint8_t payload[1400];
    memset(payload, 'v', size);
    payload[0] = 0x80;
    payload[1] = 111;
    c.hdrs[12] = 0x08;
    struct iphdr *ip = (struct iphdr *)(c.hdrs + 14);
    struct udphdr *udp = (struct udphdr *)(ip + 1);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->tot_len = htons(20 + 8 + size);
    inet_pton(AF_INET, argv[4], &ip->saddr);
    inet_pton(AF_INET, argv[6], &ip->daddr);
    ip->check = htons(fold(sum16(ip, 20, 0)));
    udp->source = htons(sport);
    udp->dest = htons(dport);
    udp->len = htons(8 + size);
    uint16_t sum = fold(sum16(payload, size, sum16(udp, 8, sum16(&ip->saddr, 8, IPPROTO_UDP + 8 + size))));
    udp->check = htons(sum ? sum : 0xffff);

    libbpf_set_print(NULL);
    struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
    if (!obj || bpf_object__load(obj)) {
        fprintf(stderr, "xdploop: cannot load %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    int loop = bpf_program__fd(bpf_object__find_program_by_name(obj, "loop"));
    int pass = bpf_program__fd(bpf_object__find_program_by_name(obj, "pass"));
    int cfg = bpf_map__fd(bpf_object__find_map_by_name(obj, "cfg"));
    int got = bpf_map__fd(bpf_object__find_map_by_name(obj, "got"));
    int ncpu = libbpf_num_possible_cpus();
    uint32_t zero = 0;
    bpf_map_update_elem(cfg, &zero, &c, 0);
    if (bpf_xdp_attach(ifindex, loop, XDP_FLAGS_DRV_MODE, NULL)) {
        fprintf(stderr, "xdploop: cannot attach to %s: %s\n", ifname, strerror(errno));
        return 1;
    }

    /* from here on the loop is the veth's: whatever ends this process puts `pass` back first */
    the_ifindex = ifindex, the_pass = pass;
    signal(SIGTERM, restore);
    signal(SIGINT, restore);
    signal(SIGALRM, restore);
    alarm((unsigned)(warmup + seconds) + 30);
    printf("{\"attached\": true}\n");
    fflush(stdout);
    char go[16];
    if (!fgets(go, sizeof(go), stdin)) go[0] = 0;

    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(sport), .sin_addr.s_addr = ip->saddr};
    struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(dport), .sin_addr.s_addr = ip->daddr};
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("xdploop: bind");
        bpf_xdp_attach(ifindex, pass, XDP_FLAGS_DRV_MODE, NULL);
        return 1;
    }
    for (int i = 0; i < inflight; i++) {
        sendto(s, payload, size, MSG_DONTWAIT, (struct sockaddr *)&d, sizeof(d));
        if (i % 16 == 15) usleep(200); /* a few at a time: no queue on the way overflows while the loop fills */
    }
    usleep((useconds_t)(warmup * 1e6));
    double t0 = now_s();
    uint64_t n0 = counted(got, ncpu, 0);
    printf("{\"start\": %.6f, \"count\": %llu}\n", t0, (unsigned long long)n0);
    fflush(stdout);
    usleep((useconds_t)(seconds * 1e6));
    double t1 = now_s();
    uint64_t n1 = counted(got, ncpu, 0);
    printf("{\"end\": %.6f, \"count\": %llu, \"seconds\": %.6f, \"forwarded\": %llu}\n", t1, (unsigned long long)n1,
           t1 - t0, (unsigned long long)(n1 - n0));
    fflush(stdout);
    c.armed = 0; /* the loop stops: what is still in flight is counted and dropped */
    bpf_map_update_elem(cfg, &zero, &c, 0);
    usleep(200000);
    uint64_t n2 = counted(got, ncpu, 0);
    printf("{\"came_back\": %llu, \"inflight\": %d, \"wrong\": %llu}\n", (unsigned long long)(n2 - n1), inflight,
           (unsigned long long)counted(got, ncpu, 1));
    bpf_xdp_attach(ifindex, pass, XDP_FLAGS_DRV_MODE, NULL);
    return 0;
}
