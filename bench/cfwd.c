/* Baseline for bench/relay.py: the minimal C UDP forwarder (recvmmsg -> 8-byte header -> sendmmsg),
 * every datagram from LISTEN_PORT to 127.0.0.1:DEST_PORT (or LISTEN_IP:LISTEN_PORT to DEST_IP:DEST_PORT). No flow
 * table, no checks: the floor of what forwarding costs on this kernel. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: cfwd LISTEN_PORT DEST_PORT [LISTEN_IP DEST_IP]\n"); return 2; }
    int in = socket(AF_INET, SOCK_DGRAM, 0), out = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 4 << 20;
    setsockopt(in, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    setsockopt(out, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, argc > 3 ? argv[3] : "127.0.0.1", &a.sin_addr);
    if (bind(in, (struct sockaddr *)&a, sizeof(a)) < 0) { perror("bind"); return 1; }
    struct sockaddr_in dst = a;
    dst.sin_port = htons(atoi(argv[2]));
    if (argc > 4) inet_pton(AF_INET, argv[4], &dst.sin_addr);
    static char bufs[BATCH][2048 + 8];
    struct mmsghdr rm[BATCH], sm[BATCH];
    struct iovec riov[BATCH], siov[BATCH];
    struct sockaddr_in from[BATCH];
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            riov[i].iov_base = bufs[i] + 8;
            riov[i].iov_len = 2048;
            memset(&rm[i].msg_hdr, 0, sizeof(rm[i].msg_hdr));
            rm[i].msg_hdr.msg_iov = &riov[i];
            rm[i].msg_hdr.msg_iovlen = 1;
            rm[i].msg_hdr.msg_name = &from[i];
            rm[i].msg_hdr.msg_namelen = sizeof(from[i]);
        }
        int n = recvmmsg(in, rm, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        for (int i = 0; i < n; i++) {
            bufs[i][0] = (char)0xF1;
            bufs[i][1] = 0;
            memcpy(bufs[i] + 2, &from[i].sin_port, 2);
            memcpy(bufs[i] + 4, &from[i].sin_addr, 4);
            siov[i].iov_base = bufs[i];
            siov[i].iov_len = rm[i].msg_len + 8;
            memset(&sm[i].msg_hdr, 0, sizeof(sm[i].msg_hdr));
            sm[i].msg_hdr.msg_iov = &siov[i];
            sm[i].msg_hdr.msg_iovlen = 1;
            sm[i].msg_hdr.msg_name = &dst;
            sm[i].msg_hdr.msg_namelen = sizeof(dst);
        }
        int off = 0;
        while (off < n) {
            int r = sendmmsg(out, sm + off, n - off, 0);
            if (r <= 0) { off++; continue; }
            off += r;
        }
    }
}
