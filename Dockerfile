# syntax=docker/dockerfile:1
#
# One image with every shmdb binary: the operator starts each tier's pods from it with the
# tier's binary as the command (storage-node, processing-node, commit-manager), and the Helm
# chart runs the operator and the RDMA device plugin from it.
#
#   docker build -t ghcr.io/shmdb/shmdb:0.1.0 .
#
# Stage 1 builds the whole workspace in release mode; stage 2 is a slim Debian with only the
# binaries and the shared libraries they load, running as an unprivileged user.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# protobuf is compiled by protox (pure Rust): no protoc. The RDMA verbs libraries and clang
# are for the RDMA transport's bindings.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libclang-dev libibverbs-dev librdmacm-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && for bin in storage-node processing-node commit-manager operator crdgen device-plugin shmdb; do \
      cp "target/release/$bin" /out/; \
    done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libibverbs1 librdmacm1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shmdb \
 && useradd --system --uid 10001 --gid shmdb --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin shmdb
COPY --from=builder /out/storage-node /usr/local/bin/storage-node
COPY --from=builder /out/processing-node /usr/local/bin/processing-node
COPY --from=builder /out/commit-manager /usr/local/bin/commit-manager
COPY --from=builder /out/operator /usr/local/bin/operator
COPY --from=builder /out/crdgen /usr/local/bin/crdgen
COPY --from=builder /out/device-plugin /usr/local/bin/device-plugin
COPY --from=builder /out/shmdb /usr/local/bin/shmdb
# Numeric, so the kubelet can verify runAsNonRoot without resolving names.
USER 10001:10001
# The SQL, storage, commit-manager and metrics ports of the tiers.
EXPOSE 5432 7400 7500 9090
CMD ["shmdb", "--help"]
