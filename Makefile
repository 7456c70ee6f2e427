SHELL   := /bin/bash
GO      ?= go
CONFIG  ?= config.json
PREFIX  ?= /usr/local
DESTDIR ?=

.PHONY: all build run run-fleet test fmt-check vet fuzz bench bench-deps bench-go certs install clean

all: build

## build: compile fastlb and the test backends into bin/
build:
	$(GO) build -o bin/fastlb ./cmd/fastlb
	$(GO) build -o bin/testbackends ./testbackends/cmd/testbackends
	$(GO) build -o bin/fastlb-certs ./tlsconf/cmd/fastlb-certs
	$(GO) build -o bin/fastlb-bench ./bench/cmd/fastlb-bench

## run: start the test backends of $(CONFIG) and fastlb in front of them; Ctrl-C stops all
run: build
	@bin/testbackends -config $(CONFIG) & tb=$$!; \
	trap 'kill $$tb 2>/dev/null; wait $$tb 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	for port in $$(bin/testbackends -config $(CONFIG) -list-ports); do \
		for i in $$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$$port) 2>/dev/null && break; sleep 0.05; done; \
	done; \
	bin/fastlb -config $(CONFIG)

## run-fleet: one etcd, the test backends of config.json and three fastlb instances sharing them (8080, 8090, 8100); Ctrl-C stops all
run-fleet: build
	$(GO) build -o bin/fastlb-fleet ./cmd/fastlb-fleet
	bin/fastlb-fleet -bin bin/fastlb -config $(CONFIG)

## test: formatting, vet, the race-enabled test suite and a short fuzz run
# The short fuzz runs are bounded by a number of inputs, not a duration: with
# a duration, Go 1.26's fuzz coordinator can fail a run that found nothing
# with "context deadline exceeded" (golang/go#75804).
test: fmt-check vet
	$(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run 'Allocations' ./balancer ./proxy
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 100000x ./config
	$(GO) test -run '^$$' -fuzz '^FuzzParseBackend$$' -fuzztime 50000x ./config
	$(GO) test -run '^$$' -fuzz '^FuzzParsePatch$$' -fuzztime 20000x ./adminapi
	$(GO) test -run '^$$' -fuzz '^FuzzPeekCookie$$' -fuzztime 20000x ./proxy
	$(GO) test -run '^$$' -fuzz '^FuzzRewrite$$' -fuzztime 50000x ./proxy
	$(GO) test -run '^$$' -fuzz '^FuzzResponseHeader$$' -fuzztime 30000x ./upstream

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## fuzz: longer fuzzing of the parsers: configuration, admin API JSON, cookies, request and response headers, routes
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime 2m ./config
	$(GO) test -run '^$$' -fuzz '^FuzzParseBackend$$' -fuzztime 1m ./config
	$(GO) test -run '^$$' -fuzz '^FuzzParsePatch$$' -fuzztime 1m ./adminapi
	$(GO) test -run '^$$' -fuzz '^FuzzPeekCookie$$' -fuzztime 1m ./proxy
	$(GO) test -run '^$$' -fuzz '^FuzzRewrite$$' -fuzztime 2m ./proxy
	$(GO) test -run '^$$' -fuzz '^FuzzResponseHeader$$' -fuzztime 2m ./upstream
	$(GO) test -run '^$$' -fuzz '^FuzzMatch$$' -fuzztime 1m ./routing
	$(GO) test -run '^$$' -fuzz '^FuzzTarget$$' -fuzztime 1m ./routing

## bench: end-to-end scenarios against direct, fastlb, HAProxy and nginx (QUICK=1: about a minute)
NCPU      := $(shell nproc 2>/dev/null || echo 2)
LOAD_CPUS := $(if $(filter 1,$(NCPU)),0,1-$(shell expr $(NCPU) - 1))
bench: build
	taskset -c $(LOAD_CPUS) bin/fastlb-bench -proxy-cpu 0 $(if $(QUICK),-quick) $(if $(ONLY),-only $(ONLY))

## bench-deps: install wrk, HAProxy and nginx from the distribution's packages
bench-deps:
	apt-get update && apt-get install -y wrk haproxy nginx

## bench-go: the Go benchmarks of the balancers, the route table, the rate limiter and the request path
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./balancer ./routing ./ratelimit ./proxy

## install: the binary, the systemd unit and /etc/fastlb/config.json (kept if present); DESTDIR and PREFIX apply
install:
	$(GO) build -trimpath -o bin/fastlb ./cmd/fastlb
	install -D -m 0755 bin/fastlb $(DESTDIR)$(PREFIX)/bin/fastlb
	sed 's|/usr/local/bin/fastlb|$(PREFIX)/bin/fastlb|g' deploy/fastlb.service > bin/fastlb.service
	install -D -m 0644 bin/fastlb.service $(DESTDIR)/etc/systemd/system/fastlb.service
	install -d -m 0750 $(DESTDIR)/etc/fastlb
	@if [ -e $(DESTDIR)/etc/fastlb/config.json ]; then \
		echo "keeping the existing $(DESTDIR)/etc/fastlb/config.json"; \
	else \
		install -m 0640 config.json $(DESTDIR)/etc/fastlb/config.json; \
	fi

## certs: a local CA and a certificate for localhost in certs/, for trying HTTPS
certs:
	$(GO) run ./tlsconf/cmd/fastlb-certs -dir certs

clean:
	rm -rf bin bench/results
