/* The inbound decision shared by sk_lookup and the tc fallback: which listener a new TCP
 * connection to a pod goes to, or why it is passed or dropped. */
#ifndef MESH_INBOUND_H
#define MESH_INBOUND_H

#include "maps.h"

enum mesh_verdict {
	MESH_PASS = 0,   /* leave the connection to the kernel */
	MESH_DROP = 1,   /* refuse */
	MESH_ASSIGN = 2, /* hand to the listener in *kind */
};

/* Connections made inside the pod: on lo (ifindex 1), or from the pod's own address. The
 * kernel reports the address's device (eth0), not lo, as ingress for local traffic to the pod
 * IP, so the source address is what tells the app's (and the redirected) connects apart;
 * packets from outside cannot carry a local source (martian). */
static __always_inline int mesh_is_local(const struct mesh_ip *src, const struct mesh_ip *dst, __u32 ifindex)
{
	if (ifindex == 1)
		return 1;
	if (src->family == MESH_AF_INET)
		return src->ip[0] == dst->ip[0] || (src->ip[0] & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000);
	return src->ip[0] == dst->ip[0] && src->ip[1] == dst->ip[1] && src->ip[2] == dst->ip[2] &&
	       src->ip[3] == dst->ip[3];
}

/* dst is the pod address, src the client (normalized: IPv4 in ip[0]); port in host byte order. */
static __always_inline int mesh_inbound_verdict(const struct mesh_ip *src, struct mesh_ip *dst, __u32 port,
						 __u32 ifindex, struct mesh_listener_key *key)
{
	if (mesh_is_local(src, dst, ifindex)) {
		/* ztunnel delivering to the app, the app talking to itself, or a redirected connect */
		mesh_count(REASON_IN_SKIP_LOOPBACK);
		return MESH_PASS;
	}
	__u64 *cookie = bpf_map_lookup_elem(&mesh_pod_ips, dst);
	if (!cookie) {
		mesh_count(REASON_IN_SKIP_NOT_POD);
		return MESH_PASS;
	}
	__u64 netns = *cookie;
	struct mesh_pod *pod = bpf_map_lookup_elem(&mesh_pods, &netns);
	if (!pod) {
		mesh_count(REASON_IN_SKIP_NOT_POD);
		return MESH_PASS;
	}
	if (port == MESH_PORT_OUTBOUND || port == MESH_PORT_INBOUND) {
		mesh_count(REASON_IN_DROP_PROXY_PORT);
		return MESH_DROP;
	}
	key->netns_cookie = netns;
	key->kind = port == MESH_PORT_HBONE ? MESH_LISTENER_HBONE : MESH_LISTENER_INBOUND;
	key->pad = 0;
	return MESH_ASSIGN;
}

/* No listener for an ASSIGN verdict: fail-open pods pass, others drop. */
static __always_inline int mesh_inbound_missing(struct mesh_listener_key *key)
{
	__u64 netns = key->netns_cookie;
	struct mesh_pod *pod = bpf_map_lookup_elem(&mesh_pods, &netns);
	if (pod && (pod->flags & MESH_POD_FAIL_OPEN)) {
		mesh_count(REASON_IN_FAIL_OPEN);
		return MESH_PASS;
	}
	mesh_count(REASON_IN_DROP_NO_LISTENER);
	return MESH_DROP;
}

#endif
