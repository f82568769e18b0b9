/* tc ingress on a pod's interfaces (fallback for kernels without sk_lookup): assigns a new
 * TCP connection's SYN to the pod's 15006/15008 listener with bpf_sk_assign. Later packets
 * find the established socket by the normal 4-tuple lookup. Dropped SYNs get no RST. */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include "include/inbound.h"

#define MESH_IPPROTO_TCP 6

SEC("classifier")
int mesh_tc_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	struct mesh_ip dst = {}, src = {};
	struct tcphdr *tcp;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->protocol != MESH_IPPROTO_TCP || ip->ihl != 5)
			return TC_ACT_OK;
		dst.family = MESH_AF_INET;
		dst.ip[0] = ip->daddr;
		src.family = MESH_AF_INET;
		src.ip[0] = ip->saddr;
		tcp = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != MESH_IPPROTO_TCP)
			return TC_ACT_OK;
		dst.family = MESH_AF_INET6;
		dst.ip[0] = ip6->daddr.in6_u.u6_addr32[0];
		dst.ip[1] = ip6->daddr.in6_u.u6_addr32[1];
		dst.ip[2] = ip6->daddr.in6_u.u6_addr32[2];
		dst.ip[3] = ip6->daddr.in6_u.u6_addr32[3];
		src.family = MESH_AF_INET6;
		src.ip[0] = ip6->saddr.in6_u.u6_addr32[0];
		src.ip[1] = ip6->saddr.in6_u.u6_addr32[1];
		src.ip[2] = ip6->saddr.in6_u.u6_addr32[2];
		src.ip[3] = ip6->saddr.in6_u.u6_addr32[3];
		tcp = (void *)(ip6 + 1);
	} else {
		return TC_ACT_OK;
	}
	if ((void *)(tcp + 1) > end)
		return TC_ACT_OK;
	if (!tcp->syn || tcp->ack)
		return TC_ACT_OK;
	struct mesh_listener_key key = {};
	int verdict = mesh_inbound_verdict(&src, &dst, bpf_ntohs(tcp->dest), skb->ingress_ifindex, &key);
	if (verdict == MESH_PASS)
		return TC_ACT_OK;
	if (verdict == MESH_DROP)
		return TC_ACT_SHOT;
	struct bpf_sock *sk = bpf_map_lookup_elem(&mesh_listeners, &key);
	if (!sk)
		return mesh_inbound_missing(&key) == MESH_PASS ? TC_ACT_OK : TC_ACT_SHOT;
	long err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		mesh_count(REASON_IN_ASSIGN_FAILED);
		return TC_ACT_SHOT;
	}
	mesh_count(key.kind == MESH_LISTENER_HBONE ? REASON_IN_HBONE : REASON_IN_PLAINTEXT);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
