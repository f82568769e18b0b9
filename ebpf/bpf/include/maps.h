/* Every map of the capture programs. Each C file includes this; the loader pins each map by
 * name under <pin_dir>/maps/ so all programs (and a restarted loader) share one instance. */
#ifndef MESH_MAPS_H
#define MESH_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "types.h"
#include "reasons.h"

/* netns cookie -> pod config */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct mesh_pod);
} mesh_pods SEC(".maps");

/* pod IP -> netns cookie (sk_lookup and tc cannot read the netns cookie) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct mesh_ip);
	__type(value, __u64);
} mesh_pod_ips SEC(".maps");

/* (netns cookie, kind) -> listening socket. Value is a 4-byte fd from userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 12288);
	__type(key, struct mesh_listener_key);
	__type(value, __u32);
} mesh_listeners SEC(".maps");

/* app socket cookie -> original destination (connect4/6 write, sockops and getpeername read) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct mesh_addr);
} mesh_orig_ck SEC(".maps");

/* app 4-tuple -> original destination (sockops writes, getsockopt reads) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct mesh_tuple);
	__type(value, struct mesh_addr);
} mesh_orig_tup SEC(".maps");

/* per-CPU counters indexed by enum mesh_reason */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, __u64);
} mesh_counters SEC(".maps");

/* [0]: struct mesh_config, written by the loader on every open */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_config);
} mesh_config SEC(".maps");

static __always_inline void mesh_count(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&mesh_counters, &reason);
	if (n)
		*n += 1;
}

static __always_inline int mesh_is_v4_mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

#endif
