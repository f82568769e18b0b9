/* sockops on the pods' parent cgroup: when a redirected app socket connects, re-keys its
 * original destination from the socket cookie to the 4-tuple the proxy will see on accept. */
#include "include/tuple.h"

SEC("sockops")
int mesh_sockops(struct bpf_sock_ops *ctx)
{
	__u32 op = ctx->op;
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct mesh_addr *found = bpf_map_lookup_elem(&mesh_orig_ck, &cookie);
	if (!found)
		return 1;
	struct mesh_addr orig = *found;
	struct mesh_tuple key = {};
	__u32 family = ctx->family;
	if (family == MESH_AF_INET) {
		mesh_endpoint(&key.src, family, ctx->local_ip4, 0, 0, 0, 0, bpf_htons((__u16)ctx->local_port));
		mesh_endpoint(&key.dst, family, ctx->remote_ip4, 0, 0, 0, 0,
			      bpf_htons((__u16)bpf_ntohl(ctx->remote_port)));
	} else {
		mesh_endpoint(&key.src, family, 0, ctx->local_ip6[0], ctx->local_ip6[1], ctx->local_ip6[2],
			      ctx->local_ip6[3], bpf_htons((__u16)ctx->local_port));
		mesh_endpoint(&key.dst, family, 0, ctx->remote_ip6[0], ctx->remote_ip6[1], ctx->remote_ip6[2],
			      ctx->remote_ip6[3], bpf_htons((__u16)bpf_ntohl(ctx->remote_port)));
	}
	if (bpf_map_update_elem(&mesh_orig_tup, &key, &orig, BPF_ANY) == 0 && op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		mesh_count(REASON_ORIG_TUPLE_STORED);
	return 1;
}

char _license[] SEC("license") = "GPL";
