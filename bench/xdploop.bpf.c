// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bench/xdploop.c's kernel half: the client and the transceiver of bench/relay.py --xdp as one XDP program.
 *
 * loop: on the generator's veth, a datagram the forwarder sent to the sink port (the "transceiver"), with voxgate's
 *       8-byte header in front of the client's payload (wire/encap.py: 0xF1, flags, the client's port and address,
 *       checked here against the template), is counted and, while `armed`, turned back into the next client's
 *       next datagram to the relay: the header dropped (bpf_xdp_adjust_head), the Ethernet, IPv4 and UDP headers
 *       written from a template user space made (the payload is the same bytes every time, so the template's UDP
 *       checksum is right), the client port moved on to the next of `flows` ports (the checksum updated for it:
 *       RFC 1624), so the datagrams in flight go round every flow the relay holds; then XDP_TX. Disarmed, it drops
 *       them; a datagram with the wrong length or header is counted apart and dropped. Everything else is passed
 *       up untouched.
 * pass: left on the veth between runs, so it keeps the XDP its peer's XDP_TX needs. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ENCAP_LEN 8
#define HDRS (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

struct loopcfg {
	__u16 sink_port; /* network order */
	__u16 armed;
	__u16 udp_len;   /* of the forwarded datagram, host order: 8 + header + payload */
	__u16 flows;     /* the clients' ports: first_port .. first_port + flows - 1 */
	__u16 first_port; /* host order; the template's source port */
	__u16 pad;
	unsigned char hdrs[HDRS]; /* the client's datagram: Ethernet, IPv4, UDP */
	unsigned char pad2[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loopcfg);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2); /* forwarded right, forwarded wrong */
	__type(key, __u32);
	__type(value, __u64);
} got SEC(".maps");

SEC("xdp")
int loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	__u32 zero = 0;
	struct loopcfg *c = bpf_map_lookup_elem(&cfg, &zero);
	if (!c || udp->dest != c->sink_port)
		return XDP_PASS;
	unsigned char *x = (void *)(udp + 1);
	struct udphdr *client = (void *)(c->hdrs + sizeof(struct ethhdr) + sizeof(struct iphdr));
	struct iphdr *client_ip = (void *)(c->hdrs + sizeof(struct ethhdr));
	if ((void *)(x + ENCAP_LEN) > end)
		return XDP_PASS;
	__u16 port = bpf_ntohs(*(__u16 *)(x + 2));
	__u32 right = bpf_ntohs(udp->len) == c->udp_len && x[0] == 0xF1 && port >= c->first_port &&
		      port - c->first_port < c->flows && *(__u32 *)(x + 4) == client_ip->saddr;
	__u32 which = right ? 0 : 1;
	__u64 *n = bpf_map_lookup_elem(&got, &which);
	if (n)
		*n += 1;
	if (!c->armed || !right)
		return XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, ENCAP_LEN))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + HDRS > end)
		return XDP_DROP;
	__builtin_memcpy(data, c->hdrs, HDRS);
	__u16 next = port + 1 - c->first_port < c->flows ? port + 1 : c->first_port;
	udp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
	udp->source = bpf_htons(next);
	__u32 sum = (__u16)~bpf_ntohs(client->check) + (__u16)~c->first_port + next;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	__u16 check = ~sum;
	udp->check = bpf_htons(check ? check : 0xffff);
	return XDP_TX;
}

SEC("xdp")
int pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
