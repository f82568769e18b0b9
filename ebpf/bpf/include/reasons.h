/* Why a program skipped, dropped or steered a connection: the index into the per-CPU counter
 * array `mesh_counters`. Mirrored by `mesh_ebpf::Reason` (src/types.rs); keep both in sync. */
#ifndef MESH_REASONS_H
#define MESH_REASONS_H

enum mesh_reason {
	/* outbound (cgroup/connect4, connect6) */
	REASON_OUT_REDIRECTED = 0,       /* connect rewritten to <pod ip>:15001 */
	REASON_OUT_SKIP_NOT_CAPTURED = 1, /* netns cookie is not a registered pod */
	REASON_OUT_SKIP_PROXY_MARK = 2,  /* socket carries the proxy's SO_MARK */
	REASON_OUT_SKIP_LOOPBACK = 3,    /* destination 127.0.0.0/8, ::1 or unspecified */
	REASON_OUT_SKIP_OWN_IP = 4,      /* destination is the pod's own IP */
	REASON_OUT_SKIP_NOT_TCP = 5,     /* not a TCP socket */
	REASON_OUT_SKIP_NO_POD_IP = 6,   /* pod has no address of this family */
	REASON_OUT_FAIL_OPEN = 7,        /* fail-open pod without an outbound listener: unchanged */
	REASON_OUT_STORE_FAILED = 8,     /* original destination could not be stored: unchanged */
	/* sockops / getsockopt / getpeername */
	REASON_ORIG_TUPLE_STORED = 9,    /* sockops keyed the original destination by 4-tuple */
	REASON_ORIG_DST_ANSWERED = 10,   /* getsockopt SO_ORIGINAL_DST answered */
	REASON_ORIG_DST_NOT_FOUND = 11,  /* getsockopt SO_ORIGINAL_DST: no entry, kernel answer kept */
	REASON_ORIG_DST_BAD_BUFFER = 12, /* getsockopt SO_ORIGINAL_DST: user buffer too small */
	REASON_PEERNAME_REWRITTEN = 13,  /* getpeername shows the original destination */
	/* inbound (sk_lookup, tc fallback) */
	REASON_IN_PLAINTEXT = 14,        /* steered to the 15006 listener */
	REASON_IN_HBONE = 15,            /* steered to the 15008 listener */
	REASON_IN_DROP_PROXY_PORT = 16,  /* 15001/15006 from outside the pod: dropped */
	REASON_IN_DROP_NO_LISTENER = 17, /* listener missing, pod fail-closed: dropped */
	REASON_IN_FAIL_OPEN = 18,        /* listener missing, pod fail-open: passed unchanged */
	REASON_IN_SKIP_LOOPBACK = 19,    /* made inside the pod (lo or from the pod IP): never steered */
	REASON_IN_SKIP_NOT_POD = 20,     /* destination is not a registered pod IP */
	REASON_IN_ASSIGN_FAILED = 21,    /* bpf_sk_assign refused the listener: dropped */
	REASON_MAX = 22,
};

#endif
