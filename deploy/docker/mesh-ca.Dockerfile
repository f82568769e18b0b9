# syntax=docker/dockerfile:1
# mesh-ca, the certificate authority. Build from the repository root:
#   docker build -f deploy/docker/mesh-ca.Dockerfile -t ghcr.io/mesh-project/mesh-ca:0.1.0 .
# Non-root (uid 65532), no capabilities; its state folder is a volume (`--state-dir`).

FROM rust:1.95-bookworm AS build
# protobuf-compiler: the CA API (mesh-identity).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mesh-ca --bin mesh-ca \
 && install -D target/release/mesh-ca /out/mesh-ca

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mesh-ca /usr/local/bin/mesh-ca
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mesh-ca"]
