/* Builds normalized endpoints for the 4-tuple map: v4-mapped IPv6 addresses become IPv4 so an
 * app's dual-stack socket and the proxy's IPv4 accept agree on the key. */
#ifndef MESH_TUPLE_H
#define MESH_TUPLE_H

#include "maps.h"

static __always_inline void mesh_endpoint(struct mesh_addr *a, __u32 family, __u32 ip4, __u32 i0, __u32 i1,
					  __u32 i2, __u32 i3, __u16 port_be)
{
	a->port = port_be;
	if (family == MESH_AF_INET) {
		a->family = MESH_AF_INET;
		a->ip[0] = ip4;
		a->ip[1] = 0;
		a->ip[2] = 0;
		a->ip[3] = 0;
	} else if (i0 == 0 && i1 == 0 && i2 == bpf_htonl(0x0000ffff)) {
		a->family = MESH_AF_INET;
		a->ip[0] = i3;
		a->ip[1] = 0;
		a->ip[2] = 0;
		a->ip[3] = 0;
	} else {
		a->family = MESH_AF_INET6;
		a->ip[0] = i0;
		a->ip[1] = i1;
		a->ip[2] = i2;
		a->ip[3] = i3;
	}
}

#endif
