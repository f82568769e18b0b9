/* cgroup/getsockopt on the proxy's cgroup: answers SO_ORIGINAL_DST (SOL_IP / SOL_IPV6, 80) for
 * an accepted captured connection from the 4-tuple map; otherwise keeps the kernel's answer. */
#include "include/tuple.h"

#define MESH_SOL_IP 0
#define MESH_SOL_IPV6 41
#define MESH_SO_ORIGINAL_DST 80

struct mesh_sockaddr_in {
	__u16 family;
	__u16 port;
	__u32 addr;
	__u8 zero[8];
};

struct mesh_sockaddr_in6 {
	__u16 family;
	__u16 port;
	__u32 flowinfo;
	__u32 addr[4];
	__u32 scope_id;
};

/* Separate volatile 4-byte stores: clang would merge optlen and retval into one 8-byte store,
 * which the verifier refuses. */
static __always_inline void mesh_answer(struct bpf_sockopt *ctx, __s32 len)
{
	volatile __s32 *optlen = &ctx->optlen;
	volatile __s32 *retval = &ctx->retval;
	*optlen = len;
	*retval = 0;
}

SEC("cgroup/getsockopt")
int mesh_getsockopt(struct bpf_sockopt *ctx)
{
	__s32 level = ctx->level;
	if (ctx->optname != MESH_SO_ORIGINAL_DST || (level != MESH_SOL_IP && level != MESH_SOL_IPV6))
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	__u32 family = sk->family;
	struct mesh_tuple key = {};
	/* The accepted socket's peer is the app's source, its local end the app's destination. */
	if (family == MESH_AF_INET) {
		mesh_endpoint(&key.src, family, sk->dst_ip4, 0, 0, 0, 0, (__u16)sk->dst_port);
		mesh_endpoint(&key.dst, family, sk->src_ip4, 0, 0, 0, 0, bpf_htons((__u16)sk->src_port));
	} else {
		mesh_endpoint(&key.src, family, 0, sk->dst_ip6[0], sk->dst_ip6[1], sk->dst_ip6[2], sk->dst_ip6[3],
			      (__u16)sk->dst_port);
		mesh_endpoint(&key.dst, family, 0, sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3],
			      bpf_htons((__u16)sk->src_port));
	}
	struct mesh_addr *found = bpf_map_lookup_elem(&mesh_orig_tup, &key);
	if (!found) {
		mesh_count(REASON_ORIG_DST_NOT_FOUND);
		return 1;
	}
	__u32 o0 = found->ip[0], o1 = found->ip[1], o2 = found->ip[2], o3 = found->ip[3];
	__u16 port = found->port;
	__u16 ofam = found->family;
	void *end = ctx->optval_end;
	if (level == MESH_SOL_IP) {
		struct mesh_sockaddr_in *sa = ctx->optval;
		if (ofam != MESH_AF_INET)
			return 1;
		if ((void *)(sa + 1) > end) {
			mesh_count(REASON_ORIG_DST_BAD_BUFFER);
			return 1;
		}
		sa->family = MESH_AF_INET;
		sa->port = port;
		sa->addr = o0;
		__builtin_memset(sa->zero, 0, sizeof(sa->zero));
		mesh_answer(ctx, sizeof(*sa));
	} else {
		struct mesh_sockaddr_in6 *sa6 = ctx->optval;
		if ((void *)(sa6 + 1) > end) {
			mesh_count(REASON_ORIG_DST_BAD_BUFFER);
			return 1;
		}
		sa6->family = MESH_AF_INET6;
		sa6->port = port;
		sa6->flowinfo = 0;
		sa6->scope_id = 0;
		if (ofam == MESH_AF_INET) {
			sa6->addr[0] = 0;
			sa6->addr[1] = 0;
			sa6->addr[2] = bpf_htonl(0x0000ffff);
			sa6->addr[3] = o0;
		} else {
			sa6->addr[0] = o0;
			sa6->addr[1] = o1;
			sa6->addr[2] = o2;
			sa6->addr[3] = o3;
		}
		mesh_answer(ctx, sizeof(*sa6));
	}
	mesh_count(REASON_ORIG_DST_ANSWERED);
	return 1;
}

char _license[] SEC("license") = "GPL";
