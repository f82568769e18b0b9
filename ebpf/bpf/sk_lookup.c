/* sk_lookup attached to each captured pod's netns: steers new TCP connections from outside the
 * pod to its 15006 (plaintext) or 15008 (HBONE) listener, refuses 15001/15006 from outside,
 * and fails closed while a listener is missing. Connections made inside the pod pass. */
#include "include/inbound.h"

#define MESH_IPPROTO_TCP 6

SEC("sk_lookup")
int mesh_sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != MESH_IPPROTO_TCP)
		return SK_PASS;
	/* Load every address field unconditionally into scalars: otherwise clang selects between
	 * ctx offsets and the verifier refuses the modified ctx pointer. */
	volatile __u32 *c = (volatile __u32 *)ctx;
	__u32 l4 = ctx->local_ip4, r4 = ctx->remote_ip4;
	__u32 l6[4], r6[4];
#pragma unroll
	for (int i = 0; i < 4; i++) {
		l6[i] = c[(__builtin_offsetof(struct bpf_sk_lookup, local_ip6) / 4) + i];
		r6[i] = c[(__builtin_offsetof(struct bpf_sk_lookup, remote_ip6) / 4) + i];
	}
	struct mesh_ip dst = {}, src = {};
	if (ctx->family == MESH_AF_INET) {
		dst.family = MESH_AF_INET;
		dst.ip[0] = l4;
		src.family = MESH_AF_INET;
		src.ip[0] = r4;
	} else {
		dst.family = MESH_AF_INET6;
		src.family = MESH_AF_INET6;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			dst.ip[i] = l6[i];
			src.ip[i] = r6[i];
		}
	}
	struct mesh_listener_key key = {};
	int verdict = mesh_inbound_verdict(&src, &dst, ctx->local_port, ctx->ingress_ifindex, &key);
	if (verdict == MESH_PASS)
		return SK_PASS;
	if (verdict == MESH_DROP)
		return SK_DROP;
	struct bpf_sock *sk = bpf_map_lookup_elem(&mesh_listeners, &key);
	if (!sk)
		return mesh_inbound_missing(&key) == MESH_PASS ? SK_PASS : SK_DROP;
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		mesh_count(REASON_IN_ASSIGN_FAILED);
		return SK_DROP;
	}
	mesh_count(key.kind == MESH_LISTENER_HBONE ? REASON_IN_HBONE : REASON_IN_PLAINTEXT);
	return SK_PASS;
}

char _license[] SEC("license") = "GPL";
