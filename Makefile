# One command each: `make demo` runs the demo, `make test` runs the tests. Both set up what they
# need (libtorch in ~/.cache/edgeprune, the Rust build) and can be run again at no cost.
CARGO ?= cargo
BIN := target/release/edgeprune

.PHONY: setup build test test-aarch64 demo bench clippy fmt

setup:
	@scripts/setup-libtorch.sh
	@scripts/setup-onnxruntime.sh

build: setup
	$(CARGO) build --release

test: setup
	EDGEPRUNE_ONNXRUNTIME=$${EDGEPRUNE_ONNXRUNTIME:-$${EDGEPRUNE_CACHE:-$$HOME/.cache/edgeprune}/onnxruntime-1.32.0/libonnxruntime.so} \
		$(CARGO) test --release

# Cross-builds for aarch64 Linux and runs the aarch64 binary under qemu-user on tiny data (installs
# the cross compiler, qemu-user, the Rust target and the aarch64 wheels itself).
test-aarch64:
	scripts/aarch64-smoke.sh

demo: build
	@scripts/demo.sh

bench: build
	benches/compare.sh train-step resnet20 64 2 3

clippy: setup
	$(CARGO) clippy --release --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
