/* cgroup/getpeername4 and getpeername6 on the pods' parent cgroup: a captured app socket's
 * peer shows as the original destination, not <pod ip>:15001. */
#include "include/maps.h"

SEC("cgroup/getpeername4")
int mesh_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct mesh_addr *orig = bpf_map_lookup_elem(&mesh_orig_ck, &cookie);
	if (!orig || orig->family != MESH_AF_INET)
		return 1;
	__u32 ip = orig->ip[0];
	__u16 port = orig->port;
	ctx->user_ip4 = ip;
	ctx->user_port = port;
	mesh_count(REASON_PEERNAME_REWRITTEN);
	return 1;
}

SEC("cgroup/getpeername6")
int mesh_getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct mesh_addr *orig = bpf_map_lookup_elem(&mesh_orig_ck, &cookie);
	if (!orig)
		return 1;
	__u32 o0 = orig->ip[0], o1 = orig->ip[1], o2 = orig->ip[2], o3 = orig->ip[3];
	__u16 port = orig->port;
	if (orig->family == MESH_AF_INET) {
		/* a dual-stack socket that reached an IPv4 destination */
		o3 = o0;
		o0 = 0;
		o1 = 0;
		o2 = bpf_htonl(0x0000ffff);
	}
	ctx->user_ip6[0] = o0;
	ctx->user_ip6[1] = o1;
	ctx->user_ip6[2] = o2;
	ctx->user_ip6[3] = o3;
	ctx->user_port = port;
	mesh_count(REASON_PEERNAME_REWRITTEN);
	return 1;
}

char _license[] SEC("license") = "GPL";
