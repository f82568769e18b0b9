# syntax=docker/dockerfile:1
# meshctl, the CLI (for CI jobs and GitOps pipelines: `install --dry-run`, `analyze`,
# `install`/`uninstall` with a mounted kubeconfig). Build from the repository root:
#   docker build -f deploy/docker/meshctl.Dockerfile -t ghcr.io/mesh-project/meshctl:0.1.0 .
# Non-root (uid 65532). `meshctl lab` needs root, `ip` and a host network namespace: run it on
# a machine, not from this image.

FROM rust:1.95-bookworm AS build
# protobuf-compiler: the CA API (mesh-identity, used by `meshctl cert`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p meshctl --bin meshctl \
 && install -D target/release/meshctl /out/meshctl

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meshctl /usr/local/bin/meshctl
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshctl"]
