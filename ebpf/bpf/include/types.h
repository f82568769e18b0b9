/* Map keys and values shared with userspace. Mirrors `mesh_ebpf::types` (src/types.rs), whose
 * unit test checks sizes and offsets; change both together. All addresses and ports are in
 * network byte order, IPv4 addresses live in ip[0] with ip[1..3] zero. */
#ifndef MESH_TYPES_H
#define MESH_TYPES_H

#include <linux/types.h>

#define MESH_AF_INET 2
#define MESH_AF_INET6 10

#define MESH_PORT_OUTBOUND 15001
#define MESH_PORT_INBOUND 15006
#define MESH_PORT_HBONE 15008

/* mesh_pod.flags */
#define MESH_POD_FAIL_OPEN 0x1u
/* mesh_pod.addrs */
#define MESH_POD_HAS_IP4 0x1u
#define MESH_POD_HAS_IP6 0x2u

/* listener kinds (mesh_listener_key.kind) */
#define MESH_LISTENER_OUTBOUND 0u
#define MESH_LISTENER_INBOUND 1u
#define MESH_LISTENER_HBONE 2u

/* Value of mesh_pods (key: __u64 netns cookie). 28 bytes. */
struct mesh_pod {
	__u32 flags;
	__u32 addrs;
	__u32 ip4;
	__u32 ip6[4];
};

/* Key of mesh_pod_ips (value: __u64 netns cookie). 20 bytes. */
struct mesh_ip {
	__u32 family;
	__u32 ip[4];
};

/* Key of mesh_listeners (SOCKHASH, value: __u32 socket fd from userspace). 16 bytes. */
struct mesh_listener_key {
	__u64 netns_cookie;
	__u32 kind;
	__u32 pad;
};

/* An endpoint. 20 bytes. */
struct mesh_addr {
	__u32 ip[4];
	__u16 port;   /* network byte order */
	__u16 family; /* MESH_AF_INET or MESH_AF_INET6 */
};

/* Key of mesh_orig_tup: the app's connection as the app sees it after the rewrite. 40 bytes. */
struct mesh_tuple {
	struct mesh_addr src;
	struct mesh_addr dst;
};

/* Value of mesh_config[0]. 8 bytes. */
struct mesh_config {
	__u32 proxy_mark;
	__u32 pad;
};

/* Layout pinned by numbers the Rust unit test (types::tests::layout) checks too. */
_Static_assert(sizeof(struct mesh_pod) == 28, "mesh_pod size");
_Static_assert(__builtin_offsetof(struct mesh_pod, addrs) == 4, "mesh_pod.addrs");
_Static_assert(__builtin_offsetof(struct mesh_pod, ip4) == 8, "mesh_pod.ip4");
_Static_assert(__builtin_offsetof(struct mesh_pod, ip6) == 12, "mesh_pod.ip6");
_Static_assert(sizeof(struct mesh_ip) == 20, "mesh_ip size");
_Static_assert(__builtin_offsetof(struct mesh_ip, ip) == 4, "mesh_ip.ip");
_Static_assert(sizeof(struct mesh_listener_key) == 16, "mesh_listener_key size");
_Static_assert(__builtin_offsetof(struct mesh_listener_key, kind) == 8, "mesh_listener_key.kind");
_Static_assert(sizeof(struct mesh_addr) == 20, "mesh_addr size");
_Static_assert(__builtin_offsetof(struct mesh_addr, port) == 16, "mesh_addr.port");
_Static_assert(__builtin_offsetof(struct mesh_addr, family) == 18, "mesh_addr.family");
_Static_assert(sizeof(struct mesh_tuple) == 40, "mesh_tuple size");
_Static_assert(__builtin_offsetof(struct mesh_tuple, dst) == 20, "mesh_tuple.dst");
_Static_assert(sizeof(struct mesh_config) == 8, "mesh_config size");

#endif
