# syntax=docker/dockerfile:1
# The launcher image: elastic-launch, a static binary (glibc with crt-static), and `torchrun`
# as a symlink to it, FROM scratch as user 65532 (nothing else is needed: no shell, no libc).
# ENTRYPOINT is elastic-launch: the operator's init container gives only args (`__install
# /elasticjob/bin`, which copies the binary into the pod's shared emptyDir), and `docker run
# IMAGE --standalone ...` works as torchrun would. Static, so the copy runs in any user image
# (glibc or musl, any distro).
#
# Build from the repository root (the workspace is the context; see .dockerignore):
#   docker build -f images/launcher.Dockerfile -t ghcr.io/elasticjob/elastic-launch:0.1.0 .
# (`make images` builds every image.) linux/amd64 and linux/arm64.
# Where the binaries come from: BINARIES=build (the default) compiles them in the Rust image;
# BINARIES=prebuilt takes them from the build context `dist` (`--build-context dist=DIR`, DIR
# holding a static elastic-launch): how the local cluster builds this image with buildah from
# what cargo built on the host, without pulling the Rust image (tests/cluster/images.sh).

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
      cargo build --release --locked --target "$triple" -p elastic-launch; \
    install -D -m 0755 "target/$triple/release/elastic-launch" /out/bin/elastic-launch; \
    ln -s elastic-launch /out/bin/torchrun; \
    if readelf -d /out/bin/elastic-launch | grep -q NEEDED; then \
      echo "elastic-launch is not static" >&2; exit 1; \
    fi; \
    /out/bin/elastic-launch --help >/dev/null

FROM scratch AS prebuilt
COPY --from=dist --chmod=0755 elastic-launch /out/bin/elastic-launch
COPY --from=dist torchrun /out/bin/torchrun

FROM ${BINARIES} AS binaries

FROM scratch
# A directory copy keeps torchrun a symlink.
COPY --from=binaries /out/bin/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/elastic-launch"]
