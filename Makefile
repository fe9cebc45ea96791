# haimg — the two commands of the README:
#   make demo   build the templates and run the cluster on local LXC
#   make test   everything CI runs
# Both install what they need on a fresh Debian 12 (as root).

SHELL := /bin/bash
CARGO ?= cargo
HAIMG := target/release/haimg
VERSION := $(shell sed -n 's/^  version: //p' haimg.yaml | head -n 1)
WEBAPP_TEMPLATE ?= out/haimg-webapp_$(VERSION)_amd64.tar.zst
# Every Debian package haimg and its tests use: exactly the packages `haimg doctor` checks
# (src/doctor/needs.rs; a unit test keeps the two lists equal). The fresh-host stage of
# `make test` proves on a pristine Debian 12 root that nothing else is needed.
APT_PACKAGES := apt binutils busybox-static ca-certificates curl debian-archive-keyring dpkg gcc \
                gnupg gpgv iproute2 libc6-dev liblxc-common lxc mmdebstrap mount netbase nftables \
                python3 tar uidmap util-linux zstd

.PHONY: setup build init release demo test lint fresh-host unit templates app-test golden interrupted demo-policy scan bench clean

## setup: install the host tools haimg uses (idempotent); Rust (rustup) and make come first
setup:
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found; install Rust with rustup (https://rustup.rs)"; exit 1; }
	@for c in fmt:rustfmt clippy:clippy; do \
	  $(CARGO) $${c%%:*} --version >/dev/null 2>&1 && continue; \
	  echo "setup: rustup component add $${c##*:}"; rustup component add $${c##*:} || exit 1; \
	done
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  missing=$$(echo $$missing); echo "setup: installing $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: run as root to install packages"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "setup: host packages present"; fi

## init: the static PID 1 baked into every image, built as `haimg build` builds it
## (src/build/init.rs holds the flags); fails above 2 MiB
init: release
	$(HAIMG) build --init-only

release:
	$(CARGO) build --release -p haimg

## build: the role templates into out/ (mongo is reported as not buildable here)
build: setup release
	$(HAIMG) build --allow-missing mongo

## demo: build, then run the cluster on local LXC (without mongo, see README)
demo: build
	$(HAIMG) deploy --allow-missing mongo

## fresh-host: on a pristine Debian 12 root (mmdebstrap minbase + make, Rust from this host),
## `make setup` must leave `haimg doctor --for test` nothing missing (.ci/fresh-host)
fresh-host: release
	.ci/fresh-host $(HAIMG)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

## unit: every cargo test, including real template builds (twice, for reproducibility),
## LXC containers, network namespaces and the Proxmox fake (root)
unit:
	HAIMG_BUILD_TESTS=1 $(CARGO) test --workspace --all-features

## templates: lb and webapp into out/ (mongo's package is not reachable here), and the
## same at the next version into out-next/, which the rollout scenarios roll out to
templates: release
	$(HAIMG) build --allow-missing mongo
	sed 's/^  version: .*/  version: 1.1.0/' haimg.yaml > out/next-haimg.yaml
	$(HAIMG) --spec out/next-haimg.yaml build --role lb,webapp --out out-next
	sed 's/^      advert_int_s: 1$$/      advert_interval_ms: 100/' haimg.yaml > out/fast-haimg.yaml
	grep -q '^      advert_interval_ms: 100$$' out/fast-haimg.yaml
	$(HAIMG) --spec out/fast-haimg.yaml build --role lb --out out-fast

## app-test: the Next.js app's node tests (roles/webapp/app/test) against what ships: the image's
## own Node and /srv/webapp, extracted from the webapp template into a temporary directory. The test
## files run from a copy beside that tree, so `mongodb` resolves to the driver traced into the image.
## The server test binds 127.0.0.1 only. Skipped tests count as a failure here.
app-test: templates
	@set -euo pipefail; \
	tmp=$$(mktemp -d -t haimg-app-test.XXXXXX); \
	trap 'rm -rf "$$tmp"' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; \
	test -f '$(WEBAPP_TEMPLATE)' || { echo "error: $(WEBAPP_TEMPLATE) not found: run make templates" >&2; exit 1; }; \
	tar --zstd -xf '$(WEBAPP_TEMPLATE)' -C "$$tmp" ./opt/node ./srv/webapp; \
	mkdir "$$tmp/app"; \
	cp -R roles/webapp/app/package.json roles/webapp/app/lib roles/webapp/app/scripts roles/webapp/app/test "$$tmp/app/"; \
	ln -s ../srv/webapp/node_modules "$$tmp/app/node_modules"; \
	echo "app-test: node $$("$$tmp/opt/node/bin/node" --version), WEBAPP_DIR=$$tmp/srv/webapp"; \
	cd "$$tmp/app"; \
	WEBAPP_DIR="$$tmp/srv/webapp" "$$tmp/opt/node/bin/node" --test --test-reporter=spec test/*.test.mjs \
	  | tee "$$tmp/report.txt"; \
	if ! grep -q ' skipped 0$$' "$$tmp/report.txt"; then echo "error: app-test skipped tests" >&2; exit 1; fi

## golden: boot the templates on local LXC and run every golden scenario on one cluster,
## the rollout, rollback and rollout-bad-green ones (to the 1.1.0 build in out-next) included;
## then the VIP scenarios on a cluster of lbs with the fast VRRP profile (100 ms adverts, out-fast)
FAST_SCENARIOS := boot,vip-failover,vip-planned-moves,vip-stability
golden: templates
	$(HAIMG) test --next-templates out-next
	$(HAIMG) --spec out/fast-haimg.yaml test --templates out-fast --allow-missing webapp \
	  --scenario $(FAST_SCENARIOS)

## interrupted: `haimg test` stopped by SIGTERM mid-scenario removes its cluster itself (exit 143);
## stopped by SIGKILL, `haimg down --leftover-tests` removes it; nothing of either run is left
interrupted: templates
	.ci/interrupted-test $(HAIMG) out

## demo-policy: the cluster as `haimg deploy` makes it (in a state directory of its own, so a
## `make demo` cluster is left alone), then the scenarios that leave it as they found it —
## network-policy and rogue-lb among them — on it (`haimg test --deployed`), then `haimg down`
demo-policy: templates
	@set -euo pipefail; \
	export HAIMG_STATE_DIR; HAIMG_STATE_DIR=$$(mktemp -d /var/tmp/haimg-demo-policy.XXXXXX); \
	chmod 711 "$$HAIMG_STATE_DIR"; \
	trap 'if $(HAIMG) down >/dev/null; then rm -rf "$$HAIMG_STATE_DIR"; else echo "error: haimg down failed; HAIMG_STATE_DIR=$$HAIMG_STATE_DIR" >&2; fi' EXIT; \
	trap 'exit 130' INT; trap 'exit 143' TERM; \
	$(HAIMG) deploy --allow-missing mongo --yes --no-progress; \
	$(HAIMG) test --deployed

## scan: no secret in any built template: the cluster store's values (when this host has a
## store for the spec's cluster), PEM private keys, vendor tokens (`haimg secrets scan`)
scan: templates
	$(HAIMG) secrets scan out out-next out-fast

## test: everything CI runs
test: setup lint fresh-host unit app-test golden interrupted demo-policy scan

## bench: see BENCHMARKS.md
bench: setup release
	$(CARGO) bench --bench build

clean:
	$(CARGO) clean
	rm -rf out out-next out-fast
