# syntax=docker/dockerfile:1
# waypoint, the per-namespace L7 proxy. Build from the repository root:
#   docker build -f deploy/docker/waypoint.Dockerfile -t ghcr.io/mesh-project/waypoint:0.1.0 .
# Non-root (uid 65532), no capabilities: it listens on 15008/15020/15021 only.

FROM rust:1.95-bookworm AS build
# protobuf-compiler: the CA API (mesh-identity).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p waypoint --bin waypoint \
 && install -D target/release/waypoint /out/waypoint

# cc: glibc and libgcc, which the Rust binary links dynamically.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/waypoint /usr/local/bin/waypoint
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/waypoint"]
