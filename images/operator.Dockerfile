# syntax=docker/dockerfile:1
# The operator image: elasticjob-operator, a static binary (glibc with crt-static), on
# distroless/static as user 65532. The chart sets only args: the ENTRYPOINT is the binary.
# Build from the repository root (the workspace is the context; see .dockerignore):
#   docker build -f images/operator.Dockerfile -t ghcr.io/elasticjob/elasticjob-operator:0.1.0 .
# (`make images` builds both images.) linux/amd64 and linux/arm64.

ARG RUST_VERSION=1.95

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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/elasticjob-operator /usr/local/bin/elasticjob-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/elasticjob-operator"]
