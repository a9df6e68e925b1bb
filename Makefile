# elasticjob: `make demo` runs the main job, `make test` runs every test.
# Slow parts are cached outside the clone, under $(CACHE): the cargo target dir and the PyTorch venv.

CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/elasticjob
export CARGO_TARGET_DIR := $(CACHE)/target
PYTHON_ENV := tests/scripts/python-env.sh
LAUNCH := $(CARGO_TARGET_DIR)/release/elastic-launch

.PHONY: all build test demo bench lint rust-toolchain python-env cluster-provision cluster-test

all: build

rust-toolchain:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with https://rustup.rs (rustup toolchain install stable)"; exit 1; }

python-env:
	@$(PYTHON_ENV) >/dev/null

build: rust-toolchain
	cargo build --release -p elastic-launch

# Every test: unit, subprocess (launcher, store), and PyTorch interop with real torch workers.
test: rust-toolchain python-env
	ELASTICJOB_PYTHON="$$($(PYTHON_ENV))" cargo test --workspace --all-targets
	ELASTICJOB_PYTHON="$$($(PYTHON_ENV))" cargo test --workspace --doc

# The main job: 4 local workers of examples/train.py (DDP, gloo) under elastic-launch.
demo: build python-env
	PYTHON_EXEC="$$($(PYTHON_ENV))" $(LAUNCH) --standalone --nproc-per-node=4 examples/train.py

# Side-by-side benchmarks against torchrun and torch's TCPStore; results go in bench/README.md.
bench: build python-env
	bench/launch.sh
	bench/rendezvous.sh
	bench/store.sh

lint: rust-toolchain
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# Local Kubernetes control plane (issue 4, tests/cluster/): provision once (cached under
# $(CACHE)/cluster, ~12 min cold), then the end-to-end tests behind the cargo feature
# `control-plane-tests` (not part of `make test` yet).
cluster-provision:
	tests/cluster/provision.sh

cluster-test: rust-toolchain cluster-provision
	cargo test -p local-cluster --features control-plane-tests -- --nocapture
