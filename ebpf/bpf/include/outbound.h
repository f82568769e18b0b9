/* The decision shared by cgroup/connect4 and connect6: is this connect captured, and is the
 * pod's outbound listener there when the pod is fail-open. */
#ifndef MESH_OUTBOUND_H
#define MESH_OUTBOUND_H

#include "maps.h"

#define MESH_IPPROTO_TCP 6

/* Returns the pod when the socket is a captured pod's TCP socket without the proxy mark,
 * NULL (and counts why) otherwise. */
static __always_inline struct mesh_pod *mesh_outbound_pod(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	struct mesh_pod *pod = bpf_map_lookup_elem(&mesh_pods, &netns);
	if (!pod) {
		mesh_count(REASON_OUT_SKIP_NOT_CAPTURED);
		return 0;
	}
	if (ctx->protocol != MESH_IPPROTO_TCP) {
		mesh_count(REASON_OUT_SKIP_NOT_TCP);
		return 0;
	}
	__u32 zero = 0;
	struct mesh_config *cfg = bpf_map_lookup_elem(&mesh_config, &zero);
	struct bpf_sock *sk = ctx->sk;
	if (cfg && sk) {
		__u32 mark = sk->mark;
		__u32 proxy_mark = cfg->proxy_mark;
		if (proxy_mark != 0 && mark == proxy_mark) {
			mesh_count(REASON_OUT_SKIP_PROXY_MARK);
			return 0;
		}
	}
	return pod;
}

/* Fail-open pods without an outbound listener keep their destination (returns 0). The
 * SOCKHASH lookup yields a referenced socket that must be released. */
static __always_inline int mesh_outbound_listener_ok(struct bpf_sock_addr *ctx, struct mesh_pod *pod)
{
	__u32 flags = pod->flags;
	if (!(flags & MESH_POD_FAIL_OPEN))
		return 1;
	struct mesh_listener_key key = {
		.netns_cookie = bpf_get_netns_cookie(ctx),
		.kind = MESH_LISTENER_OUTBOUND,
	};
	struct bpf_sock *l = bpf_map_lookup_elem(&mesh_listeners, &key);
	if (!l) {
		mesh_count(REASON_OUT_FAIL_OPEN);
		return 0;
	}
	bpf_sk_release(l);
	return 1;
}

/* Remembers the original destination by socket cookie; 0 when the map refused it. */
static __always_inline int mesh_store_orig(struct bpf_sock_addr *ctx, struct mesh_addr *orig)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	if (bpf_map_update_elem(&mesh_orig_ck, &cookie, orig, BPF_ANY) != 0) {
		mesh_count(REASON_OUT_STORE_FAILED);
		return 0;
	}
	return 1;
}

#endif
