# syntax=docker/dockerfile:1
# The operator image: elasticjob-operator, a static binary (glibc with crt-static), FROM
# scratch as user 65532. The chart sets only args: the ENTRYPOINT is the binary. It needs no CA
# bundle: it trusts the cluster's CA from its service-account mount.
#
# Build from the repository root (the workspace is the context; see .dockerignore):
#   docker build -f images/operator.Dockerfile -t ghcr.io/elasticjob/elasticjob-operator:0.1.0 .
# (`make images` builds every image.) linux/amd64 and linux/arm64.
# Where the binary comes from: BINARIES=build (the default) compiles it in the Rust image;
# BINARIES=prebuilt takes it from the build context `dist` (`--build-context dist=DIR`, DIR
# holding a static elasticjob-operator): how the local cluster builds this image with buildah
# from what cargo built on the host, without pulling the Rust image (tests/cluster/images.sh).

ARG RUST_VERSION=1.95
ARG BINARIES=build

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
WORKDIR /src
COPY . .
# --target makes RUSTFLAGS apply to the binary only, not to build scripts and proc-macros.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eu; \
    case "${TARGETARCH:-amd64}" in \
      amd64) triple=x86_64-unknown-linux-gnu ;; \
      arm64) triple=aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported TARGETARCH: ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked --target "$triple" -p elasticjob-operator; \
    install -D -m 0755 "target/$triple/release/elasticjob-operator" /out/elasticjob-operator; \
    if readelf -d /out/elasticjob-operator | grep -q NEEDED; then \
      echo "elasticjob-operator is not static" >&2; exit 1; \
    fi

FROM scratch AS prebuilt
COPY --from=dist --chmod=0755 elasticjob-operator /out/elasticjob-operator

FROM ${BINARIES} AS binaries

FROM scratch
COPY --from=binaries /out/elasticjob-operator /usr/local/bin/elasticjob-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/elasticjob-operator"]
