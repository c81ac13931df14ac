# Palisade. The two commands a fresh machine needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
CLANG ?= clang-19
ARCH  := x86

BPF_SRC  := $(wildcard bpf/*.bpf.c)
BPF_HDR  := $(wildcard bpf/lib/*.h) $(wildcard bpf/*.h)
BPF_OBJ  := $(patsubst bpf/%.bpf.c,build/bpf/%.bpf.o,$(BPF_SRC))
# Test programs of the loader (tests/bpf/progs), built next to the datapath objects.
BPF_TEST_SRC := $(wildcard tests/bpf/progs/*.bpf.c)
BPF_TEST_HDR := $(wildcard tests/bpf/progs/*.h)
BPF_TEST_OBJ := $(patsubst tests/bpf/progs/%.bpf.c,build/bpf/test/%.bpf.o,$(BPF_TEST_SRC))
PROTO_SRC := $(wildcard proto/*.proto proto/*/*.proto)

.PHONY: all bootstrap bpf proto test test-fast demo bench lint clean

all: bootstrap

bootstrap:
	@scripts/bootstrap.sh
	@$(MAKE) --no-print-directory bpf proto

build/vmlinux.h:
	@mkdir -p build
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

build/bpf/%.bpf.o: bpf/%.bpf.c $(BPF_HDR) build/vmlinux.h
	@mkdir -p build/bpf
	$(CLANG) -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_$(ARCH) -Ibuild -Ibpf -c $< -o $@

build/bpf/test/%.bpf.o: tests/bpf/progs/%.bpf.c $(BPF_TEST_HDR) build/vmlinux.h
	@mkdir -p build/bpf/test
	$(CLANG) -O2 -g -Wall -Werror -target bpf -D__TARGET_ARCH_$(ARCH) -Ibuild -Itests/bpf/progs -c $< -o $@

bpf: $(BPF_OBJ) $(BPF_TEST_OBJ)

proto: build/.proto.stamp

build/.proto.stamp: $(PROTO_SRC) scripts/gen-proto.sh
	@mkdir -p build
	@scripts/gen-proto.sh
	@touch $@

test: bootstrap
	$(PY) -m pytest tests -q

test-fast: bootstrap
	$(PY) -m pytest tests -q -m "not privileged and not kafka and not slow"

demo: bootstrap
	$(PY) -m palisade.demo

bench: bootstrap
	$(PY) bench/run_all.py

lint: bootstrap
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf build
