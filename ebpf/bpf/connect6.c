/* cgroup/connect6 on the pods' parent cgroup: like connect4 for IPv6 sockets. A v4-mapped
 * destination (dual-stack socket) is treated as IPv4 and sent to ::ffff:<pod ipv4>:15001. */
#include "include/outbound.h"

SEC("cgroup/connect6")
int mesh_connect6(struct bpf_sock_addr *ctx)
{
	struct mesh_pod *pod = mesh_outbound_pod(ctx);
	if (!pod)
		return 1;
	__u32 d0 = ctx->user_ip6[0], d1 = ctx->user_ip6[1], d2 = ctx->user_ip6[2], d3 = ctx->user_ip6[3];
	__u32 addrs = pod->addrs;
	struct mesh_addr orig = { .port = (__u16)ctx->user_port };
	if (d0 == 0 && d1 == 0 && d2 == bpf_htonl(0x0000ffff)) {
		/* v4-mapped */
		__u32 pod_ip = pod->ip4;
		if ((d3 & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000) || d3 == 0) {
			mesh_count(REASON_OUT_SKIP_LOOPBACK);
			return 1;
		}
		if (!(addrs & MESH_POD_HAS_IP4)) {
			mesh_count(REASON_OUT_SKIP_NO_POD_IP);
			return 1;
		}
		if (d3 == pod_ip) {
			mesh_count(REASON_OUT_SKIP_OWN_IP);
			return 1;
		}
		if (!mesh_outbound_listener_ok(ctx, pod))
			return 1;
		orig.ip[0] = d3;
		orig.family = MESH_AF_INET;
		if (!mesh_store_orig(ctx, &orig))
			return 1;
		ctx->user_ip6[3] = pod_ip;
		ctx->user_port = bpf_htons(MESH_PORT_OUTBOUND);
		mesh_count(REASON_OUT_REDIRECTED);
		return 1;
	}
	if ((d0 | d1 | d2) == 0 && (d3 == 0 || d3 == bpf_htonl(1))) {
		mesh_count(REASON_OUT_SKIP_LOOPBACK);
		return 1;
	}
	if (!(addrs & MESH_POD_HAS_IP6)) {
		mesh_count(REASON_OUT_SKIP_NO_POD_IP);
		return 1;
	}
	__u32 p0 = pod->ip6[0], p1 = pod->ip6[1], p2 = pod->ip6[2], p3 = pod->ip6[3];
	if (d0 == p0 && d1 == p1 && d2 == p2 && d3 == p3) {
		mesh_count(REASON_OUT_SKIP_OWN_IP);
		return 1;
	}
	if (!mesh_outbound_listener_ok(ctx, pod))
		return 1;
	orig.ip[0] = d0;
	orig.ip[1] = d1;
	orig.ip[2] = d2;
	orig.ip[3] = d3;
	orig.family = MESH_AF_INET6;
	if (!mesh_store_orig(ctx, &orig))
		return 1;
	ctx->user_ip6[0] = p0;
	ctx->user_ip6[1] = p1;
	ctx->user_ip6[2] = p2;
	ctx->user_ip6[3] = p3;
	ctx->user_port = bpf_htons(MESH_PORT_OUTBOUND);
	mesh_count(REASON_OUT_REDIRECTED);
	return 1;
}

char _license[] SEC("license") = "GPL";
