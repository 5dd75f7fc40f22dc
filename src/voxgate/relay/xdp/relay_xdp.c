// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* voxgate's relay in the kernel: an XDP program that forwards the packets of known (verified) flows exactly as the
 * user-space relay does (relay/forwarder.py), and passes everything else up to it unchanged.
 *
 *   client -> relay public port, DTLS or SRTP/SRTCP (first byte 20..63 or 128..191), a flow in `flows`:
 *       the 8-byte encapsulation header (wire/encap.py: 0xF1, flags 0, client port, client IPv4) put in front of the
 *       datagram, sent from the worker's internal address to the flow's transceiver;
 *   transceiver -> a worker's internal port, encapsulated (0xF1, no IPv6/TCP/FORGET flag), naming a client whose
 *   flow goes to that transceiver through that port:
 *       the header taken off, sent from the relay's public address to the client.
 *
 * IPv4 without options only; anything else (STUN, first packets, unknown flows, IPv6, fragments, TCP, FORGET
 * control messages, a route or neighbour the kernel has not resolved yet) is XDP_PASS, untouched. The kernel never
 * learns a flow: user space installs verified ones (relay/xdp.py) and reads their counters and last-seen time back.
 * The UDP checksum is computed again over the packet (kept 0 when the sender sent none); the IPv4 header's too. Routes and next-hop MACs come from the kernel's FIB (bpf_fib_lookup), so the relay's interface must
 * forward (net.ipv4.conf.IF.forwarding=1).
 *
 * Built with clang's BPF target (`python -m voxgate.relay.xdp build`); the object is shipped in the package and CI
 * checks that it still matches this source. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAGIC 0xF1
#define FLAG_IPV6 0x01
#define FLAG_TCP 0x04
#define FLAG_FORGET 0x08
#define ENCAP_LEN 8
#ifndef AF_INET
#define AF_INET 2
#endif

struct flow_key {
	__u32 ip;   /* the client's address and port, network order */
	__u16 port;
	__u16 pad;
};

struct flow {
	__u32 tx_ip;    /* the transceiver, network order */
	__u16 tx_port;
	__u16 int_port; /* the worker's internal socket port: where the transceiver sends */
	__u32 int_ip;   /* the relay's address toward the transceiver */
	__u32 pub_ip;   /* the relay's public address the client sends to (0 until a client packet shows it) */
	__u64 c2t_packets;
	__u64 c2t_bytes;
	__u64 t2c_packets;
	__u64 t2c_bytes;
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the client's last packet here */
};

struct config {
	__u16 pub_port; /* network order */
	__u16 pad;
	__u32 pad2;
};

enum { ST_C2T, ST_T2C, ST_PASS, ST_NO_ROUTE, ST_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);   /* a worker's internal port, network order */
	__type(value, __u8);
} internal_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &what);
	if (v)
		*v += 1;
}

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline void ip_checksum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 sum = 0;
	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	ip->check = ~fold(sum);
}

/* The UDP checksum of the packet as it now is (pseudo-header, header, payload), written into it. Computed whole, not
 * updated: a packet a local socket sent over a veth carries only a partial checksum (offload), so its old value
 * cannot be trusted. Kept 0 when the sender sent none (IPv4 allows it). */
static __always_inline void udp_checksum(struct iphdr *ip, struct udphdr *udp, void *end)
{
	__u32 sum = (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) + (ip->daddr >> 16) +
		    bpf_htons(IPPROTO_UDP) + udp->len;
	udp->check = 0;
	__u16 len = bpf_ntohs(udp->len); /* not to the frame's end: a short frame is padded */
	__u16 *w = (__u16 *)udp;
	for (int i = 0; i < 760; i++) { /* 1520 bytes at most */
		if ((void *)(w + 1) > end || (i + 1) * 2 > len)
			break;
		sum += *w;
		w++;
	}
	if ((len & 1) && (void *)((unsigned char *)w + 1) <= end)
		sum += *(unsigned char *)w; /* an odd last byte, padded with zero (little-endian: the low byte) */
	__u16 c = ~fold(fold(sum));
	udp->check = c ? c : 0xffff;
}

/* The next hop toward daddr (from saddr): its MACs and interface, or a negative number (pass the packet up). */
static __always_inline int route(struct xdp_md *ctx, __u32 saddr, __u32 daddr, __u16 tot_len,
				 unsigned char *smac, unsigned char *dmac)
{
	struct bpf_fib_lookup p = {};
	p.family = AF_INET;
	p.l4_protocol = IPPROTO_UDP;
	p.ipv4_src = saddr;
	p.ipv4_dst = daddr;
	p.tot_len = tot_len;
	p.ifindex = ctx->ingress_ifindex;
	int rc = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	__builtin_memcpy(smac, p.smac, ETH_ALEN);
	__builtin_memcpy(dmac, p.dmac, ETH_ALEN);
	return p.ifindex;
}

static __always_inline int send(struct xdp_md *ctx, int ifindex)
{
	if (ifindex == (int)ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

/* client -> transceiver: the header in front */
static __always_inline int to_transceiver(struct xdp_md *ctx, struct ethhdr *eth, struct iphdr *ip,
					  struct udphdr *udp, struct flow *f)
{
	struct ethhdr e = *eth;
	struct iphdr h = *ip;
	struct udphdr u = *udp;
	__u16 tot = bpf_ntohs(h.tot_len) + ENCAP_LEN;
	int ifindex = route(ctx, f->int_ip, f->tx_ip, tot, e.h_source, e.h_dest);
	if (ifindex < 0) {
		count(ST_NO_ROUTE);
		return XDP_PASS;
	}
	__u32 client_ip = h.saddr;
	__u16 client_port = u.source;
	__u16 payload = bpf_ntohs(u.len) - sizeof(struct udphdr);
	if (f->pub_ip != h.daddr)
		f->pub_ip = h.daddr;
	__sync_fetch_and_add(&f->c2t_packets, 1);
	__sync_fetch_and_add(&f->c2t_bytes, payload);
	f->last_seen_ns = bpf_ktime_get_ns();

	int had_check = u.check != 0;
	u.source = f->int_port;
	u.dest = f->tx_port;
	u.len = bpf_htons(bpf_ntohs(u.len) + ENCAP_LEN);
	h.saddr = f->int_ip;
	h.daddr = f->tx_ip;
	h.tot_len = bpf_htons(tot);
	h.ttl = 64;
	ip_checksum(&h);

	if (bpf_xdp_adjust_head(ctx, -ENCAP_LEN))
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (data + sizeof(e) + sizeof(h) + sizeof(u) + ENCAP_LEN > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, &e, sizeof(e));
	__builtin_memcpy(data + sizeof(e), &h, sizeof(h));
	__builtin_memcpy(data + sizeof(e) + sizeof(h), &u, sizeof(u));
	unsigned char *x = data + sizeof(e) + sizeof(h) + sizeof(u);
	x[0] = MAGIC;
	x[1] = 0;
	__builtin_memcpy(x + 2, &client_port, 2);
	__builtin_memcpy(x + 4, &client_ip, 4);
	if (had_check)
		udp_checksum(data + sizeof(e), data + sizeof(e) + sizeof(h), end);
	count(ST_C2T);
	return send(ctx, ifindex);
}

/* transceiver -> client: the header off */
static __always_inline int to_client(struct xdp_md *ctx, struct ethhdr *eth, struct iphdr *ip, struct udphdr *udp,
				     unsigned char *x, void *end)
{
	if ((void *)(x + ENCAP_LEN + 1) > end)
		return XDP_PASS;
	if (x[0] != MAGIC || (x[1] & (FLAG_IPV6 | FLAG_TCP | FLAG_FORGET)))
		return XDP_PASS;
	struct flow_key k = {};
	__builtin_memcpy(&k.port, x + 2, 2);
	__builtin_memcpy(&k.ip, x + 4, 4);
	struct flow *f = bpf_map_lookup_elem(&flows, &k);
	if (!f || !f->pub_ip || f->tx_ip != ip->saddr || f->tx_port != udp->source || f->int_port != udp->dest)
		return XDP_PASS;
	struct config *cfg;
	__u32 zero = 0;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
	struct ethhdr e = *eth;
	struct iphdr h = *ip;
	struct udphdr u = *udp;
	__u16 tot = bpf_ntohs(h.tot_len) - ENCAP_LEN;
	int ifindex = route(ctx, f->pub_ip, k.ip, tot, e.h_source, e.h_dest);
	if (ifindex < 0) {
		count(ST_NO_ROUTE);
		return XDP_PASS;
	}
	__u16 payload = bpf_ntohs(u.len) - sizeof(struct udphdr) - ENCAP_LEN;
	__sync_fetch_and_add(&f->t2c_packets, 1);
	__sync_fetch_and_add(&f->t2c_bytes, payload);

	int had_check = u.check != 0;
	u.source = cfg->pub_port;
	u.dest = k.port;
	u.len = bpf_htons(bpf_ntohs(u.len) - ENCAP_LEN);
	h.saddr = f->pub_ip;
	h.daddr = k.ip;
	h.tot_len = bpf_htons(tot);
	h.ttl = 64;
	ip_checksum(&h);

	if (bpf_xdp_adjust_head(ctx, ENCAP_LEN))
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + sizeof(e) + sizeof(h) + sizeof(u) > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, &e, sizeof(e));
	__builtin_memcpy(data + sizeof(e), &h, sizeof(h));
	__builtin_memcpy(data + sizeof(e) + sizeof(h), &u, sizeof(u));
	if (had_check)
		udp_checksum(data + sizeof(e), data + sizeof(e) + sizeof(h), end);
	count(ST_T2C);
	return send(ctx, ifindex);
}

SEC("xdp")
int voxgate_relay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	if (ip->frag_off & bpf_htons(0x3fff)) /* a fragment, or more to come */
		return XDP_PASS;
	struct udphdr *udp = (void *)(ip + 1);
	unsigned char *x = (void *)(udp + 1);
	if ((void *)(x + 1) > end)
		return XDP_PASS;
	if (bpf_ntohs(udp->len) != bpf_ntohs(ip->tot_len) - sizeof(*ip)) /* trailing bytes, or a lie: up */
		return XDP_PASS;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
	if (udp->dest == cfg->pub_port) {
		unsigned char b = x[0];
		if (!((b >= 20 && b <= 63) || (b >= 128 && b <= 191)))
			return XDP_PASS; /* STUN and the rest: the user-space relay's */
		struct flow_key k = {.ip = ip->saddr, .port = udp->source};
		struct flow *f = bpf_map_lookup_elem(&flows, &k);
		if (!f)
			return XDP_PASS;
		return to_transceiver(ctx, eth, ip, udp, f);
	}
	__u16 port = udp->dest;
	if (bpf_map_lookup_elem(&internal_ports, &port))
		return to_client(ctx, eth, ip, udp, x, end);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
