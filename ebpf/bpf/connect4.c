/* cgroup/connect4 on the pods' parent cgroup: rewrites a captured pod's TCP connect to
 * <pod ip>:15001 and remembers the original destination by socket cookie. */
#include "include/outbound.h"

SEC("cgroup/connect4")
int mesh_connect4(struct bpf_sock_addr *ctx)
{
	struct mesh_pod *pod = mesh_outbound_pod(ctx);
	if (!pod)
		return 1;
	__u32 dst = ctx->user_ip4;
	__u32 addrs = pod->addrs;
	__u32 pod_ip = pod->ip4;
	if ((dst & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000) || dst == 0) {
		mesh_count(REASON_OUT_SKIP_LOOPBACK);
		return 1;
	}
	if (!(addrs & MESH_POD_HAS_IP4)) {
		mesh_count(REASON_OUT_SKIP_NO_POD_IP);
		return 1;
	}
	if (dst == pod_ip) {
		mesh_count(REASON_OUT_SKIP_OWN_IP);
		return 1;
	}
	if (!mesh_outbound_listener_ok(ctx, pod))
		return 1;
	struct mesh_addr orig = {
		.ip = { dst, 0, 0, 0 },
		.port = (__u16)ctx->user_port,
		.family = MESH_AF_INET,
	};
	if (!mesh_store_orig(ctx, &orig))
		return 1;
	ctx->user_ip4 = pod_ip;
	ctx->user_port = bpf_htons(MESH_PORT_OUTBOUND);
	mesh_count(REASON_OUT_REDIRECTED);
	return 1;
}

char _license[] SEC("license") = "GPL";
