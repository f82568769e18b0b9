# syntax=docker/dockerfile:1
# ztunnel, the node proxy. Build from the repository root:
#   docker build -f deploy/docker/ztunnel.Dockerfile -t ghcr.io/mesh-project/ztunnel:0.1.0 .
#
# Runs as root: in-pod eBPF capture needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN
# (setns) and CAP_SYS_PTRACE (other users' /proc/<pid>/ns/net), which the DaemonSet grants
# (`meshctl install`); everything else is dropped there. Debian slim rather than distroless:
# capture runs `ip` (iproute2) inside pods' network namespaces for the delivery rule.

FROM rust:1.95-bookworm AS build
# clang + libbpf-dev: the eBPF programs (ebpf/build.rs); protobuf-compiler: the CA API (mesh-identity).
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libbpf-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ztunnel --bin ztunnel \
 && install -D target/release/ztunnel /out/ztunnel

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ztunnel /usr/local/bin/ztunnel
USER 0:0
ENTRYPOINT ["/usr/local/bin/ztunnel"]
