/* skiff's Service load balancer: the map layout, defined once.
 *
 * The BPF programs (skiff_lb.c) include this header; user space mirrors every struct as a
 * #[repr(C)] type in ebpf/src/lib.rs, and a test (ebpf/tests/layout.rs) reads the compiled
 * object's BTF and checks that sizes and field offsets agree.
 *
 * Byte order: every address and port in these maps is in network byte order, as the kernel
 * hands them to the programs (bpf_sock_addr.user_ip4/user_port, packet headers).
 */
#ifndef SKIFF_LB_H
#define SKIFF_LB_H

#include <linux/types.h>

/* Capacities. Hash maps without preallocation take memory per entry in use, so the limits
 * are ceilings, not costs. */
#define SKIFF_MAX_FRONTENDS 262144
#define SKIFF_MAX_BACKEND_CHUNKS 131072 /* × SKIFF_CHUNK backends */
#define SKIFF_MAX_AFFINITY 65536
#define SKIFF_MAX_SOCKETS 262144
#define SKIFF_MAX_CONNTRACK 262144

/* Backends per backend map entry: a set of n backends is ceil(n / SKIFF_CHUNK) entries, so
 * programming 10,000 Services × 10 endpoints is 10,000 backend writes, not 100,000. */
#define SKIFF_CHUNK 16

/* Backends the affinity check scans for a remembered backend after its set changed. */
#define SKIFF_AFFINITY_SCAN 64

/* frontend_value.flags */
#define SKIFF_FE_EXTERNAL 0x1   /* NodePort, externalIP or LoadBalancer: also served at tc */
#define SKIFF_FE_ETP_LOCAL 0x2  /* externalTrafficPolicy Local: tc uses the local set */
#define SKIFF_FE_ITP_LOCAL 0x4  /* internalTrafficPolicy Local: sockets use the local set */
#define SKIFF_FE_AFFINITY 0x8   /* sessionAffinity ClientIP (affinity_timeout seconds) */
#define SKIFF_FE_NODEPORT 0x10  /* a node address and nodePort (informational) */

/* backend_value.flags */
#define SKIFF_BE_LOCAL 0x1      /* the endpoint runs on this node */

/* ct_value.flags */
#define SKIFF_CT_SNAT 0x1       /* the forward direction rewrote the source too */

/* A Service address as a client dials it: ClusterIP, externalIP, LoadBalancer ingress IP, or
 * node address + nodePort. */
struct frontend_key {
	__u32 addr;
	__u16 port;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

/* What a frontend translates to. A Service port's frontends share one svc_id and one backend
 * set; user space replaces the whole value in one update (the hash map has no preallocation,
 * so a reader holds either the old or the new value, never a mix). */
struct frontend_value {
	__u32 svc_id;          /* the Service port: affinity is kept per svc_id */
	__u32 set_id;          /* backends 0..count of set set_id */
	__u32 local_set_id;    /* backends 0..local_count of set local_set_id: this node's only */
	__u16 count;
	__u16 local_count;
	__u16 flags;           /* SKIFF_FE_* */
	__u16 pad;
	__u32 affinity_timeout; /* seconds */
};

/* A chunk of a backend set: backend i of the set is chunk i / SKIFF_CHUNK, slot
 * i % SKIFF_CHUNK. Sets are written whole before a frontend points at them and are never
 * changed while in use: a new set gets a fresh set_id. */
struct backend_key {
	__u32 set_id;
	__u32 chunk;
};

struct backend_value {
	__u32 addr;
	__u16 port;
	__u8 flags; /* SKIFF_BE_* */
	__u8 pad;
};

/* Slots past the set's count are zero. */
struct backend_chunk {
	struct backend_value slot[SKIFF_CHUNK];
};

/* Session affinity: the backend a client last used for a Service port. client is the
 * socket's network namespace cookie (socket path) or 1 << 32 | IPv4 address (tc path). */
struct affinity_key {
	__u64 client;
	__u32 svc_id;
	__u32 pad;
};

struct affinity_value {
	__u64 last_ns;   /* bpf_ktime_get_ns() of the last use */
	__u32 set_id;    /* the set the backend was found in ... */
	__u32 index;     /* ... at this index */
	__u32 addr;      /* the backend, to find it again when the set changed */
	__u16 port;
	__u16 pad;
};

/* Reverse translation for the socket path: which Service address a socket's backend stands
 * for, so recvmsg4/getpeername4 show the Service. */
struct sock_key {
	__u64 cookie; /* bpf_get_socket_cookie() */
	__u32 addr;   /* the backend */
	__u16 port;
	__u16 pad;
};

struct sock_value {
	__u32 addr; /* the frontend */
	__u16 port;
	__u16 pad;
};

/* Connection tracking for the tc path. A forward entry (dir 0) is keyed by the packet as
 * the client sent it and holds the backend (addr/port) and, with SNAT, the node's source
 * (addr2/port2). A reply entry (dir 1) is keyed by the reply as it arrives and holds the
 * frontend to restore as source (addr/port) and the client as destination (addr2/port2). */
struct ct_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

struct ct_value {
	__u64 last_ns;
	__u32 addr;
	__u32 addr2;
	__u16 port;
	__u16 port2;
	__u8 flags; /* SKIFF_CT_* */
	__u8 pad[3];
};

/* Node settings the programs read (one entry, index 0). */
struct lb_config {
	__u32 node_addr;     /* SNAT source for backends on other nodes */
	__u16 snat_port_min; /* host order */
	__u16 snat_port_max; /* host order */
};

#endif
