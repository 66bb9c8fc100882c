// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* skiff's Service load balancer (kube-proxy's job without iptables).
 *
 * Socket path (cgroup v2 hooks, every process below the attach cgroup): connect4 and
 * sendmsg4 translate a Service address to a backend once per connection (or per datagram
 * for unconnected UDP); recvmsg4 and getpeername4 translate back, so the application sees
 * the Service as its peer. A Service without usable endpoints refuses with ECONNREFUSED.
 *
 * tc path (clsact on the node's uplink): NodePort, externalIP and LoadBalancer traffic from
 * other hosts is DNATed to a backend, SNATed to the node's address when the backend runs on
 * another node, and tracked so that replies are translated back.
 *
 * The maps and their layout are in skiff_lb.h; user space (proxy/src/dataplane) fills the
 * frontend and backend maps, the programs fill the rest.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "skiff_lb.h"

#define ECONNREFUSED 111
#define EAGAIN 11
#define AF_INET 2
#define NSEC_PER_SEC 1000000000ULL
#define SNAT_PORT_TRIES 8

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKIFF_MAX_FRONTENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct frontend_key);
	__type(value, struct frontend_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skiff_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKIFF_MAX_BACKEND_CHUNKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct backend_key);
	__type(value, struct backend_chunk);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skiff_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SKIFF_MAX_AFFINITY);
	__type(key, struct affinity_key);
	__type(value, struct affinity_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skiff_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SKIFF_MAX_SOCKETS);
	__type(key, struct sock_key);
	__type(value, struct sock_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skiff_sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SKIFF_MAX_CONNTRACK);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skiff_conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skiff_config SEC(".maps");

/* ---- backend selection (both paths) ---- */

static __always_inline int backend_at(__u32 set_id, __u32 index, struct backend_value *out)
{
	struct backend_key key = { .set_id = set_id, .chunk = index / SKIFF_CHUNK };
	struct backend_chunk *c = bpf_map_lookup_elem(&skiff_backends, &key);

	if (!c)
		return -EAGAIN;
	*out = c->slot[index & (SKIFF_CHUNK - 1)];
	return 0;
}

/* The remembered backend of an affinity entry, if the Service still has it: by index when
 * the set is the same, else by address in the new set. */
static __always_inline int affinity_backend(struct affinity_value *av, __u32 set_id, __u32 count,
					    __u32 *index, struct backend_value *out)
{
	if (av->set_id == set_id && av->index < count) {
		*index = av->index;
		return backend_at(set_id, av->index, out);
	}
	for (__u32 i = 0; i < SKIFF_AFFINITY_SCAN; i++) {
		if (i >= count)
			break;
		if (backend_at(set_id, i, out))
			return -EAGAIN;
		if (out->addr == av->addr && out->port == av->port) {
			*index = i;
			return 0;
		}
	}
	return -1;
}

/* Picks a backend of fe (a copy of the frontend's value) for client. Returns 0, or
 * -ECONNREFUSED when the set is empty, or -EAGAIN when a slot vanished (the set was
 * replaced while we read it: the caller reads the frontend again and retries once). */
static __always_inline int select_backend(const struct frontend_value *fe, int local, __u64 client,
					  struct backend_value *out)
{
	__u32 set_id = local ? fe->local_set_id : fe->set_id;
	__u32 count = local ? fe->local_count : fe->count;
	struct affinity_key akey = {};
	struct affinity_value aval = {};
	__u32 index;
	__u64 now;
	int err;

	if (count == 0)
		return -ECONNREFUSED;
	if (!(fe->flags & SKIFF_FE_AFFINITY)) {
		index = bpf_get_prandom_u32() % count;
		return backend_at(set_id, index, out);
	}
	now = bpf_ktime_get_ns();
	akey.client = client;
	akey.svc_id = fe->svc_id;
	struct affinity_value *av = bpf_map_lookup_elem(&skiff_affinity, &akey);
	err = -1;
	if (av && now - av->last_ns <= (__u64)fe->affinity_timeout * NSEC_PER_SEC)
		err = affinity_backend(av, set_id, count, &index, out);
	if (err == -EAGAIN)
		return err;
	if (err) {
		index = bpf_get_prandom_u32() % count;
		err = backend_at(set_id, index, out);
		if (err)
			return err;
	}
	aval.last_ns = now;
	aval.set_id = set_id;
	aval.index = index;
	aval.addr = out->addr;
	aval.port = out->port;
	bpf_map_update_elem(&skiff_affinity, &akey, &aval, BPF_ANY);
	return 0;
}

/* Looks a frontend up and selects, retrying once with a fresh frontend value. Returns 1 when
 * the address is no frontend, 0 with out set, or a negative error. */
static __always_inline int translate(const struct frontend_key *key, __u16 need_flags, int external,
				     __u64 client, struct frontend_value *fe,
				     struct backend_value *out)
{
	int err = -EAGAIN;

	for (int attempt = 0; attempt < 2 && err == -EAGAIN; attempt++) {
		struct frontend_value *fp = bpf_map_lookup_elem(&skiff_frontends, key);

		if (!fp || (fp->flags & need_flags) != need_flags)
			return 1;
		*fe = *fp;
		int local = external ? (fe->flags & SKIFF_FE_ETP_LOCAL)
				     : (fe->flags & SKIFF_FE_ITP_LOCAL);
		err = select_backend(fe, local, client, out);
	}
	return err;
}

/* ---- socket path ---- */

static __always_inline int sock_forward(struct bpf_sock_addr *ctx)
{
	struct frontend_key key = {
		.addr = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
	};
	struct frontend_value fe;
	struct backend_value be;
	int err;

	if (key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP)
		return 1;
	err = translate(&key, 0, 0, bpf_get_netns_cookie(ctx), &fe, &be);
	if (err == 1)
		return 1;
	if (err) {
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	}
	struct sock_key skey = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = be.addr,
		.port = be.port,
	};
	struct sock_value sval = { .addr = key.addr, .port = key.port };
	bpf_map_update_elem(&skiff_sockets, &skey, &sval, BPF_ANY);
	ctx->user_ip4 = be.addr;
	ctx->user_port = be.port;
	return 1;
}

static __always_inline void sock_reverse(struct bpf_sock_addr *ctx)
{
	struct sock_key skey = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
	};
	struct sock_value *sval = bpf_map_lookup_elem(&skiff_sockets, &skey);

	if (sval) {
		ctx->user_ip4 = sval->addr;
		ctx->user_port = sval->port;
	}
}

SEC("cgroup/connect4")
int skiff_connect4(struct bpf_sock_addr *ctx)
{
	return sock_forward(ctx);
}

SEC("cgroup/sendmsg4")
int skiff_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_forward(ctx);
}

SEC("cgroup/recvmsg4")
int skiff_recvmsg4(struct bpf_sock_addr *ctx)
{
	sock_reverse(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int skiff_getpeer4(struct bpf_sock_addr *ctx)
{
	sock_reverse(ctx);
	return 1;
}

/* ---- tc path ---- */

struct pkt {
	__u32 l4_off;
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u16 tot_len;
	__u8 proto;
};

#define IP_OFF ETH_HLEN

/* An unfragmented IPv4 TCP or UDP packet's addresses and ports; -1 for anything else. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	struct iphdr ip;
	__u16 ports[2];

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return -1;
	if (bpf_skb_load_bytes(skb, IP_OFF, &ip, sizeof(ip)))
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	if (ip.frag_off & bpf_htons(0x3fff))
		return -1;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return -1;
	p->l4_off = IP_OFF + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)))
		return -1;
	p->saddr = ip.saddr;
	p->daddr = ip.daddr;
	p->sport = ports[0];
	p->dport = ports[1];
	p->tot_len = bpf_ntohs(ip.tot_len);
	p->proto = ip.protocol;
	return 0;
}

/* Rewrites the source (src != 0) or destination address and port, fixing both checksums. */
static __always_inline int rewrite(struct __sk_buff *skb, struct pkt *p, int src, __u32 addr,
				   __u16 port)
{
	__u32 old_addr = src ? p->saddr : p->daddr;
	__u16 old_port = src ? p->sport : p->dport;
	__u32 addr_off = IP_OFF + (src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
	__u32 port_off = p->l4_off + (src ? 0 : 2);
	__u32 csum_off = p->l4_off + (p->proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
							      : offsetof(struct udphdr, check));
	/* UDP without a checksum keeps none (BPF_F_MARK_MANGLED_0 skips a zero checksum). */
	__u64 l4_flags = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (old_addr != addr) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, addr,
					l4_flags | BPF_F_PSEUDO_HDR | sizeof(addr)))
			return -1;
		if (bpf_l3_csum_replace(skb, IP_OFF + offsetof(struct iphdr, check), old_addr,
					addr, sizeof(addr)))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &addr, sizeof(addr), 0))
			return -1;
	}
	if (old_port != port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, port, l4_flags | sizeof(port)))
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &port, sizeof(port), 0))
			return -1;
	}
	if (src) {
		p->saddr = addr;
		p->sport = port;
	} else {
		p->daddr = addr;
		p->dport = port;
	}
	return 0;
}

/* Sends a translated packet on its way: straight to the next hop's device when the FIB
 * knows it (a packet whose source is the node's own address must not enter the stack again,
 * where it would be a martian), else up the stack. */
static __always_inline int forward(struct __sk_buff *skb, struct pkt *p)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = AF_INET;
	fib.l4_protocol = p->proto;
	fib.ipv4_src = p->saddr;
	fib.ipv4_dst = p->daddr;
	fib.ifindex = skb->ingress_ifindex;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
	return TC_ACT_OK;
}

/* Applies a tracked reply translation: source back to the frontend, destination back to
 * the client. */
static __always_inline int reply_nat(struct __sk_buff *skb, struct pkt *p, struct ct_value *cv)
{
	struct ct_value c = *cv;

	cv->last_ns = bpf_ktime_get_ns();
	if (rewrite(skb, p, 1, c.addr, c.port) || rewrite(skb, p, 0, c.addr2, c.port2))
		return TC_ACT_SHOT;
	return 0;
}

/* Claims a reply entry for a SNATed flow: a random port of the configured range (kept apart
 * from the kernel's ephemeral ports, so no socket of the node's own has the same 4-tuple).
 * Returns the port (network order) or 0 when SNAT_PORT_TRIES ports were all taken. */
static __always_inline __u16 snat_claim(struct pkt *p, struct backend_value *be,
					const struct lb_config *cfg, struct ct_value *rev)
{
	__u32 span = (__u32)cfg->snat_port_max - cfg->snat_port_min + 1;

	for (int i = 0; i < SNAT_PORT_TRIES; i++) {
		__u16 port = bpf_htons(cfg->snat_port_min + bpf_get_prandom_u32() % span);
		struct ct_key rkey = {
			.saddr = be->addr,
			.daddr = cfg->node_addr,
			.sport = be->port,
			.dport = port,
			.proto = p->proto,
			.dir = 1,
		};
		if (bpf_map_update_elem(&skiff_conntrack, &rkey, rev, BPF_NOEXIST) == 0)
			return port;
	}
	return 0;
}

/* A new flow to an external frontend: pick a backend and track both directions. */
static __always_inline int new_flow(struct __sk_buff *skb, struct pkt *p, struct ct_key *fkey)
{
	struct frontend_key key = { .addr = p->daddr, .port = p->dport, .proto = p->proto };
	struct frontend_value fe;
	struct backend_value be;
	__u32 zero = 0;
	int err;

	err = translate(&key, SKIFF_FE_EXTERNAL, 1, (1ULL << 32) | p->saddr, &fe, &be);
	if (err == 1)
		return TC_ACT_UNSPEC;
	if (err)
		return TC_ACT_SHOT; /* no (local) endpoint: drop, as kube-proxy does */

	struct lb_config *cfg = bpf_map_lookup_elem(&skiff_config, &zero);
	if (!cfg)
		return TC_ACT_SHOT;
	__u64 now = bpf_ktime_get_ns();
	struct ct_value fwd = { .last_ns = now, .addr = be.addr, .port = be.port };
	struct ct_value rev = {
		.last_ns = now,
		.addr = p->daddr,
		.port = p->dport,
		.addr2 = p->saddr,
		.port2 = p->sport,
	};
	int snat = !(be.flags & SKIFF_BE_LOCAL);

	if (snat) {
		__u16 port = snat_claim(p, &be, cfg, &rev);

		if (!port)
			return TC_ACT_SHOT;
		fwd.flags = SKIFF_CT_SNAT;
		fwd.addr2 = cfg->node_addr;
		fwd.port2 = port;
	} else {
		struct ct_key rkey = {
			.saddr = be.addr,
			.daddr = p->saddr,
			.sport = be.port,
			.dport = p->sport,
			.proto = p->proto,
			.dir = 1,
		};
		bpf_map_update_elem(&skiff_conntrack, &rkey, &rev, BPF_ANY);
	}
	bpf_map_update_elem(&skiff_conntrack, fkey, &fwd, BPF_ANY);
	if (rewrite(skb, p, 0, be.addr, be.port))
		return TC_ACT_SHOT;
	if (snat && rewrite(skb, p, 1, fwd.addr2, fwd.port2))
		return TC_ACT_SHOT;
	return forward(skb, p);
}

SEC("classifier")
int skiff_ingress(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct ct_value *cv;

	if (parse(skb, &p))
		return TC_ACT_UNSPEC;

	/* A reply from a backend on another node, to the address we SNATed to. */
	struct ct_key rkey = {
		.saddr = p.saddr,
		.daddr = p.daddr,
		.sport = p.sport,
		.dport = p.dport,
		.proto = p.proto,
		.dir = 1,
	};
	cv = bpf_map_lookup_elem(&skiff_conntrack, &rkey);
	if (cv) {
		if (reply_nat(skb, &p, cv))
			return TC_ACT_SHOT;
		return forward(skb, &p);
	}

	/* A packet of a flow already translated: same backend (even if it left the Service:
	 * established connections finish). */
	struct ct_key fkey = rkey;
	fkey.dir = 0;
	cv = bpf_map_lookup_elem(&skiff_conntrack, &fkey);
	if (cv) {
		struct ct_value c = *cv;

		cv->last_ns = bpf_ktime_get_ns();
		if (rewrite(skb, &p, 0, c.addr, c.port))
			return TC_ACT_SHOT;
		if ((c.flags & SKIFF_CT_SNAT) && rewrite(skb, &p, 1, c.addr2, c.port2))
			return TC_ACT_SHOT;
		return forward(skb, &p);
	}
	return new_flow(skb, &p, &fkey);
}

SEC("classifier")
int skiff_egress(struct __sk_buff *skb)
{
	struct pkt p = {};

	if (parse(skb, &p))
		return TC_ACT_UNSPEC;

	/* A reply from a backend on this node, leaving for the client. */
	struct ct_key rkey = {
		.saddr = p.saddr,
		.daddr = p.daddr,
		.sport = p.sport,
		.dport = p.dport,
		.proto = p.proto,
		.dir = 1,
	};
	struct ct_value *cv = bpf_map_lookup_elem(&skiff_conntrack, &rkey);

	if (!cv)
		return TC_ACT_UNSPEC;
	if (reply_nat(skb, &p, cv))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
