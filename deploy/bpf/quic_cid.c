// SPDX-License-Identifier: GPL-2.0
/* QUIC connection-ID learning for the balancer's l4 mode (tc, direct action).
 *
 * Why: conntrack keeps a QUIC flow on its VM only while its entry lives and the client keeps its
 * address and port. When the entry idles out, or a NAT rebinds the client, the next packet is "new"
 * and nftables would hash it to any VM. The connection ID is what stays: a server picks its own ID
 * (the SCID of its long-header packets, sent in the clear during the handshake) and the client then
 * puts it as the DCID of every short-header packet. So:
 *
 *   section "learn" (ingress of the host's VM-side interface: packets from VMs):
 *     a long-header packet from an address in `qf_slots` (VM ip -> slot) -> `qf_cids[SCID] = slot`
 *   section "steer" (ingress of the client-side interface: packets from clients):
 *     a short-header packet to the VIP:port whose DCID is in `qf_cids` -> skb->mark = slot
 *
 * nftables does the rest (new flows with a mark in 1..65535 go to that slot's VM, the others are
 * hashed). The program only marks: it never drops or redirects and always returns TC_ACT_OK.
 * The CID length comes from `qf_config` (user space fills it); short headers do not carry it.
 * Active migration (a client moving to a CID the server sent encrypted) is out of its reach.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define CID_MAX 20
#define CID_ENTRIES 65536
#define SLOT_ENTRIES 4096

struct qf_config {
	__u32 cid_len; /* 0: not configured yet, the programs do nothing */
	__u32 port;    /* the service's UDP port (host order); 0: any */
	__u8 vip[16];  /* the VIP (IPv4 as ::ffff:a.b.c.d); all zero: any */
};

struct qf_cid {
	__u8 b[CID_MAX]; /* the CID, zero-padded to CID_MAX */
};

enum { STAT_LEARNED, STAT_STEERED, STAT_UNKNOWN, STAT_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CID_ENTRIES);
	__type(key, struct qf_cid);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} qf_cids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SLOT_ENTRIES);
	__type(key, __u8[16]);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} qf_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct qf_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} qf_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} qf_stats SEC(".maps");

struct udp_at {
	__u8 src[16];
	__u8 dst[16];
	__u32 payload; /* offset of the UDP payload in the packet */
	__u16 sport;
	__u16 dport;
};

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&qf_stats, &which);

	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline int v4_mapped(__u8 out[16], __u32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
	return 0;
}

/* Where the UDP payload starts, with both addresses; -1 when the packet is not (first-fragment) UDP. */
static __always_inline int parse_udp(struct __sk_buff *skb, struct udp_at *at)
{
	__u32 l4;
	__u8 head[40];
	__u16 ports[2];

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, head, 20) < 0)
			return -1;
		if (head[9] != IPPROTO_UDP || (((__u16)head[6] << 8 | head[7]) & 0x1fff))
			return -1;
		v4_mapped(at->src, *(__u32 *)(head + 12));
		v4_mapped(at->dst, *(__u32 *)(head + 16));
		l4 = ETH_HLEN + (head[0] & 0x0f) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, head, 40) < 0)
			return -1;
		if (head[6] != IPPROTO_UDP) /* extension headers: not steered */
			return -1;
		__builtin_memcpy(at->src, head + 8, 16);
		__builtin_memcpy(at->dst, head + 24, 16);
		l4 = ETH_HLEN + 40;
	} else {
		return -1;
	}
	if (bpf_skb_load_bytes(skb, l4, ports, 4) < 0)
		return -1;
	at->sport = bpf_ntohs(ports[0]);
	at->dport = bpf_ntohs(ports[1]);
	at->payload = l4 + 8;
	return 0;
}

/* The CID of `len` bytes at `off`, zero-padded to CID_MAX; -1 when the packet is too short. */
static __always_inline int load_cid(struct __sk_buff *skb, __u32 off, __u32 len, struct qf_cid *cid)
{
	if (bpf_skb_load_bytes(skb, off, cid->b, CID_MAX) < 0)
		return -1;
#pragma unroll
	for (int i = 0; i < CID_MAX; i++)
		if (i >= len)
			cid->b[i] = 0;
	return 0;
}

static __always_inline struct qf_config *config(void)
{
	__u32 zero = 0;
	struct qf_config *cfg = bpf_map_lookup_elem(&qf_config, &zero);

	if (!cfg || cfg->cid_len < 1 || cfg->cid_len > CID_MAX)
		return 0;
	return cfg;
}

SEC("learn")
int quic_cid_learn(struct __sk_buff *skb)
{
	struct qf_config *cfg = config();
	struct udp_at at;
	struct qf_cid cid;
	__u8 head[6];
	__u8 scid_len;
	__u32 *slot, *known;

	if (!cfg || parse_udp(skb, &at) < 0)
		return TC_ACT_OK;
	slot = bpf_map_lookup_elem(&qf_slots, at.src);
	if (!slot)
		return TC_ACT_OK;
	/* long header: form and fixed bits, a version (0 is version negotiation), the DCID length */
	if (bpf_skb_load_bytes(skb, at.payload, head, 6) < 0 || (head[0] & 0xc0) != 0xc0)
		return TC_ACT_OK;
	if (!(head[1] | head[2] | head[3] | head[4]) || head[5] > CID_MAX)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, at.payload + 6 + head[5], &scid_len, 1) < 0 || scid_len != cfg->cid_len)
		return TC_ACT_OK;
	if (load_cid(skb, at.payload + 7 + head[5], scid_len, &cid) < 0)
		return TC_ACT_OK;
	known = bpf_map_lookup_elem(&qf_cids, &cid);
	if (known && *known == *slot)
		return TC_ACT_OK;
	if (bpf_map_update_elem(&qf_cids, &cid, slot, BPF_ANY) == 0)
		count(STAT_LEARNED);
	return TC_ACT_OK;
}

static __always_inline int to_service(const struct qf_config *cfg, const struct udp_at *at)
{
	__u8 any = 0;

	if (cfg->port && at->dport != cfg->port)
		return 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		any |= cfg->vip[i];
	if (!any)
		return 1;
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (cfg->vip[i] != at->dst[i])
			return 0;
	return 1;
}

SEC("steer")
int quic_cid_steer(struct __sk_buff *skb)
{
	struct qf_config *cfg = config();
	struct udp_at at;
	struct qf_cid cid;
	__u8 first;
	__u32 *slot;

	if (!cfg || parse_udp(skb, &at) < 0 || !to_service(cfg, &at))
		return TC_ACT_OK;
	/* short header: form bit clear, fixed bit set, then the DCID */
	if (bpf_skb_load_bytes(skb, at.payload, &first, 1) < 0 || (first & 0xc0) != 0x40)
		return TC_ACT_OK;
	if (load_cid(skb, at.payload + 1, cfg->cid_len, &cid) < 0)
		return TC_ACT_OK;
	slot = bpf_map_lookup_elem(&qf_cids, &cid);
	if (!slot || *slot < 1 || *slot > 0xffff) {
		count(STAT_UNKNOWN);
		return TC_ACT_OK;
	}
	skb->mark = *slot;
	count(STAT_STEERED);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
