# elasticjob: `make demo` runs the main job, `make test` runs every test.
# Slow parts are cached outside the clone, under $(CACHE): the cargo target dir, the PyTorch venv,
# the Go module and build caches, the local cluster's Kubernetes binaries and the images.

CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/elasticjob
export CARGO_TARGET_DIR := $(CACHE)/target
PYTHON_ENV := tests/scripts/python-env.sh
LAUNCH := $(CARGO_TARGET_DIR)/release/elastic-launch

.PHONY: all build test check test-fast test-cluster cargo-deny demo demo-down demo-standalone bench lint rust-toolchain python-env cluster-provision cluster-images cluster-test cluster e2e soak images kind-e2e shellcheck fuzz fuzz-smoke

VERSION ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
IMAGE_REPO ?= ghcr.io/elasticjob
# The cargo features of the tests that need root and the provisioned local cluster.
E2E_FEATURES := local-cluster/control-plane-tests,elasticjob-chart-tests/chart-tests,elasticjob-e2e/e2e-tests
CLUSTER_CRATES := -p local-cluster -p elasticjob-chart-tests -p elasticjob-e2e
# cargo-deny, pinned, built once into the cache.
CARGO_DENY_VERSION := 0.20.2
CARGO_DENY_ROOT := $(CACHE)/tools/cargo-deny-$(CARGO_DENY_VERSION)
CARGO_DENY := $(CARGO_DENY_ROOT)/bin/cargo-deny

all: build

cargo-deny: rust-toolchain
	@test -x $(CARGO_DENY) || cargo install cargo-deny --version $(CARGO_DENY_VERSION) --locked --quiet --root $(CARGO_DENY_ROOT)

rust-toolchain:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust with https://rustup.rs (rustup toolchain install stable)"; exit 1; }

python-env:
	@$(PYTHON_ENV) >/dev/null

build: rust-toolchain
	cargo build --release -p elastic-launch

# Every test, the fastest first so a slip costs seconds, not a cluster run: the checks
# (formatting, clippy, docs, dependency policy), then the tiers without a cluster (unit,
# subprocess, PyTorch interop with real torch workers, doc tests), then the tiers on the local
# Kubernetes cluster (real kubelets, containerd and runc; its binaries and images are built on
# first use: ~20 min once, then cached), the e2e suite and a 5-minute chaos soak among them;
# a bounded fuzz run (fuzz-smoke) between the two.
test: check test-fast fuzz-smoke test-cluster

# Formatting, clippy with warnings as errors, the docs, the dependency policy (deny.toml:
# licenses, banned crates, sources; offline), and bench/README.md matching its recorded runs.
check: rust-toolchain cargo-deny
	cargo fmt --all --check
	python3 bench/render.py --check
	cargo clippy --workspace --all-targets --features $(E2E_FEATURES) -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
	@# cargo-deny reads every platform's crates offline: fetch them first (a fresh machine has only its own).
	cargo fetch --locked --quiet
	$(CARGO_DENY) --log-level error --frozen check licenses bans sources

test-fast: rust-toolchain python-env shellcheck
	ELASTICJOB_PYTHON="$$($(PYTHON_ENV))" cargo test --workspace --all-targets
	ELASTICJOB_PYTHON="$$($(PYTHON_ENV))" cargo test --workspace --doc

# Every fuzz target (fuzz/: the store codec and server, the launcher's command line and PET_*,
# the operator's reading of termination messages and /status bodies) for FUZZ_SECONDS each,
# built on stable Rust into $(CACHE)/fuzz-target (~15 min cold on 2 cores). A crash fails it
# and names the reproducer (saved under $(CACHE)/fuzz/artifacts/); see fuzz/README.md.
FUZZ_SECONDS ?= 300
fuzz: rust-toolchain shellcheck
	fuzz/run.sh run $(FUZZ_SECONDS)

# A bounded fuzz run for `make test`: FUZZ_SMOKE_SECONDS (15) per target, ~80 s once built
# (the seeds include every crash found so far); the corpus grows in $(CACHE)/fuzz/corpus/.
FUZZ_SMOKE_SECONDS ?= 15
fuzz-smoke: rust-toolchain shellcheck
	shellcheck fuzz/run.sh
	fuzz/run.sh run $(FUZZ_SMOKE_SECONDS)

# The soak in `make test` replays one seed, so a red run is a change's doing (timing still
# varies); `make soak` draws a new one each time to explore.
SOAK_TEST_SEED := 165772510893924
test-cluster: rust-toolchain python-env cluster-provision cluster-images
	ELASTICJOB_PYTHON="$$($(PYTHON_ENV))" ELASTICJOB_SOAK_SEED=$(SOAK_TEST_SEED) \
	  cargo test $(CLUSTER_CRATES) --all-targets --features $(E2E_FEATURES)

# The main job: a local Kubernetes cluster, the operator installed with helm, and
# examples/elasticjob.yaml (2 pods x 2 PyTorch workers) followed to Succeeded. The cluster stays
# up to look around; `make demo-down` stops it.
demo: rust-toolchain
	examples/demo.sh

demo-down: rust-toolchain
	cargo run -q -p local-cluster --bin cluster -- down --dir $(CACHE)/clusters/demo

# Without Kubernetes: 4 local workers of examples/train.py (DDP, gloo) under elastic-launch.
demo-standalone: build python-env
	PYTHON_EXEC="$$($(PYTHON_ENV))" $(LAUNCH) --standalone --nproc-per-node=4 examples/train.py

# Side-by-side benchmarks against torchrun and torch's TCPStore; each run is recorded under
# bench/results/ (bench/record.sh), then bench/README.md is regenerated from them.
bench: build python-env
	bench/record.sh launch
	bench/record.sh rendezvous
	bench/record.sh store
	bench/record.sh cluster
	bench/record.sh operator
	python3 bench/render.py

lint: check

# Local Kubernetes cluster (tests/cluster/): Kubernetes components built from their Go modules
# (tests/cluster/components/, cached under $(CACHE)/nodes-*, ~6 min cold, a second warm);
# `make cluster-test` runs only its end-to-end tests.
cluster-provision:
	@tests/cluster/provision.sh >/dev/null

# The images the local cluster's nodes are loaded with (images/*.Dockerfile, built with buildah;
# the PyTorch image takes minutes once).
cluster-images: rust-toolchain
	@tests/cluster/images.sh >/dev/null

cluster-test: rust-toolchain cluster-provision
	cargo test -p local-cluster --features control-plane-tests -- --nocapture

# The operator's end-to-end suite alone (~7-9 min on 2 cores); E2E_ARGS filters scenarios.
e2e: rust-toolchain cluster-provision cluster-images
	cargo test -p elasticjob-e2e --features e2e-tests --test e2e -- $(E2E_ARGS)

# The chaos soak alone (tests/e2e/tests/soak.rs): jobs of real PyTorch workers under faults
# drawn from a seeded PRNG, invariants checked all along. DURATION of fault injection (5m, as
# in `make test`; 30m, 2h, ...), SEED to reproduce a run (printed at its start and on failure).
DURATION ?= 5m
SEED ?=
soak: rust-toolchain cluster-provision cluster-images
	ELASTICJOB_SOAK_DURATION=$(DURATION) ELASTICJOB_SOAK_SEED=$(SEED) \
	  cargo test -p elasticjob-e2e --features e2e-tests --test soak

# A local cluster to look around in (Ctrl-C stops it and leaves nothing behind).
cluster: rust-toolchain cluster-provision cluster-images
	cargo run -q -p local-cluster --bin cluster -- up --dir $(CACHE)/clusters/dev \
	  --images "$$(tests/cluster/images.sh | tail -n1)"

shellcheck:
	@command -v shellcheck >/dev/null || apt-get install -y -qq shellcheck >/dev/null || { echo "shellcheck not found: apt-get install -y shellcheck"; exit 1; }

# Container images (images/*.Dockerfile), tagged with the workspace version: with Docker and
# BuildKit where a Docker engine answers, else with buildah into OCI archives under
# $(CACHE)/images (what the local cluster loads).
images:
	@if docker info >/dev/null 2>&1; then \
	  docker build -f images/operator.Dockerfile -t $(IMAGE_REPO)/elasticjob-operator:$(VERSION) . && \
	  docker build -f images/launcher.Dockerfile -t $(IMAGE_REPO)/elastic-launch:$(VERSION) . && \
	  docker build -f images/pytorch.Dockerfile -t $(IMAGE_REPO)/pytorch:2.15.0 images; \
	else \
	  tests/cluster/images.sh; \
	fi

# The e2e suite on a kind cluster (needs Docker, kind, kubectl, helm): tests/kind/run.sh.
kind-e2e:
	tests/kind/run.sh
