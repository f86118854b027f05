# flagd's container image: a release build in the official Rust image, copied into a small
# Debian with nothing else (no shell tools, no curl: `flagd health` is the health check).
#
#   docker build -t flagd .
#   docker run --rm -p 8013:8013 flagd
#
# The base images are arguments, so a mirror or a pinned digest can stand in for them
# (`--build-arg RUST_IMAGE=registry.example/rust:1.95-bookworm`). Both must be the same Debian
# release: the binary links against the builder's glibc. Needs BuildKit (the default builder
# of current Docker), for the cache mounts that keep a rebuild incremental. See docs/deploy.md.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
# The registry and the target directory live in cache mounts, kept between builds, so only
# what changed is compiled again; the binary is copied out of the mount into the image.
RUN --mount=type=cache,id=flagd-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=flagd-target,target=/src/target \
    cargo build --release --locked -p flagd \
    && cp target/release/flagd /usr/local/bin/flagd

FROM ${RUNTIME_IMAGE}
# The CA store, for TLS to PostgreSQL, Redis and an upstream flagd (the slim image has none).
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /usr/local/bin/flagd /usr/local/bin/flagd
# The example flag file served by default, and the example configurations beside it.
COPY examples/ /etc/flagd/examples/
# A numeric user, so Kubernetes' runAsNonRoot can tell it is not root without a passwd entry.
USER 10001:10001
ENV FLAGD_LISTEN=0.0.0.0:8013
EXPOSE 8013
# `flagd health` probes http://127.0.0.1:PORT/healthz, PORT from FLAGD_LISTEN. With TLS on,
# override it: --health-cmd 'flagd health --url https://127.0.0.1:8013/healthz --insecure'.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["flagd", "health"]
ENTRYPOINT ["flagd"]
CMD ["serve", "--file", "/etc/flagd/examples/flags.yaml"]
