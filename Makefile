# Agentainer: `make run` installs and starts everything, `make test` runs the suite.
# Both work on a fresh Debian/Ubuntu machine as root (or with sudo).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DATA_DIR := $(HOME)/.agentainer
SUPERVISORCTL := $(VENV)/bin/supervisorctl -c supervisord.conf
APT_PACKAGES := docker.io redis-server busybox-static python3 python3-venv
MAN_PROGRAMS := agentainer:cli.parser agentainer-server:programs.server agentainer-worker:programs.worker agentainer-monitor:programs.monitor agentainer-redis:programs.redis_server
MAN_OUT ?= man
PYTEST_ARGS ?=
CHAOS_ARGS ?=
SWARM_DIR := $(HOME)/.agentainer-swarm
SWARM_ADDR := 198.18.0.1
STACK := agentainer
# NOTE: docker's filters on one key are or-ed: the stack's server, worker and monitor
SWARM_PROGRAMS := --filter label=com.docker.stack.namespace=$(STACK) \
	$(foreach p,server worker monitor,--filter name=$(STACK)_$(p))

.PHONY: swarm-images swarm-up swarm-down test-swarm bench-swarm run stop verify test lint test-persistence test-crash test-network test-security images man deps docker venv help bench chaos

help:
	@echo "make run    install what is missing, start Docker and the supervisord stack"
	@echo "make stop   stop the stack"
	@echo "make verify check prerequisites and the running stack"
	@echo "make test   install what is missing, check imports and types, run the whole test suite"
	@echo "make lint   only the checks: lint-imports (.importlinter), mypy (.mypy.ini)"
	@echo "make test-persistence | test-crash | test-network | test-security   one group of it"
	@echo "make images build the example agent images offline"
	@echo "make swarm-up    run the control plane as a Swarm stack (API on 127.0.0.1:8091)"
	@echo "make swarm-down  remove the stack, its agents, networks, volumes (and its swarm)"
	@echo "make test-swarm  the tests on a real swarm (swarm-up, tests/swarm, swarm-down)"
	@echo "make bench-swarm proxied req/s and p50, Swarm stack vs supervisord stack"
	@echo "make man    regenerate the man pages from the parsers"
	@echo "make bench  measure the proxy, streams and replay; writes the table into README.md"
	@echo "make chaos  kill every part under load, count lost and twice-delivered requests"
	@echo "            (CHAOS_ARGS=\"--requests N --kills N --seed N ...\"); writes README.md"

deps:
	@missing=""; \
	command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v nsenter >/dev/null || missing="$$missing util-linux"; \
	[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx wget || missing="$$missing busybox-static"; \
	[ -x /usr/bin/python3 ] || missing="$$missing python3"; \
	python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# NOTE: python3 builds the venv; /usr/bin/python3 goes into the example images
	@for py in python3 /usr/bin/python3; do \
		$$py -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Agentainer needs Python 3.11 or newer; $$py is $$($$py -V)"; exit 1; }; \
	done

$(VENV)/.installed: setup.py $(wildcard man/*.1)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# NOTE: editable installs skip data_files; man finds pages beside a PATH entry's bin/
	install -m 644 -D -t $(VENV)/share/man/man1 man/*.1
	touch $@

venv: deps $(VENV)/.installed

docker: deps
	@# NOTE: the daemon is probed with sudo, so a user outside the docker group is told so
	@# instead of a second dockerd being started
	@if ! $(SUDO) docker info >/dev/null 2>&1; then \
		echo "starting dockerd (log: /var/log/agentainer-dockerd.log)"; \
		$(SUDO) bash -c 'nohup dockerd >/var/log/agentainer-dockerd.log 2>&1 &'; \
		for i in $$(seq 60); do $(SUDO) docker info >/dev/null 2>&1 && break; sleep 1; done; \
		$(SUDO) docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/agentainer-dockerd.log"; exit 1; }; \
	fi
	@docker info >/dev/null 2>&1 || { echo "Docker runs, but $$(id -un) may not use it: sudo usermod -aG docker $$(id -un), then log in again"; exit 1; }

images: docker
	bash examples/build-images.sh

swarm-images: venv images
	bash conf/swarm/build-image.sh

# NOTE: a swarm made here advertises $(SWARM_ADDR), an address of this host's own (on lo,
# from the benchmarking range 198.18.0.0/15) that a second node in a network namespace
# can reach; the file swarm.created says swarm-down may take it down again
swarm-up: swarm-images
	@mkdir -p $(SWARM_DIR) && chmod 700 $(SWARM_DIR)
	@if [ "$$(docker info -f '{{.Swarm.LocalNodeState}}')" != active ]; then \
		ip -4 addr show dev lo | grep -q ' $(SWARM_ADDR)/' || $(SUDO) ip addr add $(SWARM_ADDR)/32 dev lo; \
		docker swarm init --advertise-addr $(SWARM_ADDR) --listen-addr $(SWARM_ADDR):2377 \
			--default-addr-pool 10.213.0.0/16 >/dev/null && touch $(SWARM_DIR)/swarm.created; \
		echo "created a single-node swarm advertising $(SWARM_ADDR)"; \
	fi
	@for secret in admin.token redis.password; do \
		[ -s $(SWARM_DIR)/$$secret ] || (umask 077; $(PY) -c 'import secrets; print(secrets.token_urlsafe(32))' > $(SWARM_DIR)/$$secret); \
	done
	@# NOTE: the secrets' names carry their files' hashes (conf/swarm/stack.yml)
	@image=agentainer/agentainer:$$(docker image inspect -f '{{index .Config.Labels "agentainer.example.hash"}}' agentainer/agentainer:latest | cut -c1-12); \
	export AGENTAINER_SWARM_TOKEN_ID=$$(sha256sum < $(SWARM_DIR)/admin.token | cut -c1-12) \
		AGENTAINER_SWARM_PASSWORD_ID=$$(sha256sum < $(SWARM_DIR)/redis.password | cut -c1-12); \
	AGENTAINER_IMAGE=$$image AGENTAINER_SWARM_DIR=$(SWARM_DIR) docker stack deploy --prune \
		--resolve-image never -c conf/swarm/stack.yml $(STACK) 2>&1 \
		| grep -v -e 'detach=false' -e '^$$' || true
	@# NOTE: the deploy returns at once; wait (at most 3 min) until every service of the
	@# stack runs its new spec, so /health is the new server's
	@for i in $$(seq 180); do \
		ids=$$(docker service ls -q --filter label=com.docker.stack.namespace=$(STACK)); \
		pending=$$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' $$ids | grep -c updating); \
		short=$$(docker service ls --filter label=com.docker.stack.namespace=$(STACK) --format '{{.Replicas}}' | awk -F'[/ ]' '$$1 != $$2' | wc -l); \
		[ "$$pending$$short" = 00 ] && break; sleep 1; \
	done
	@# NOTE: the secrets a new token or password replaced; one still in use stays
	@in_use=$$(docker service inspect \
		-f '{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}' \
		$$(docker service ls -q --filter label=com.docker.stack.namespace=$(STACK))); \
	for name in $$(docker secret ls --format '{{.Name}}' \
			--filter label=com.docker.stack.namespace=$(STACK)); do \
		case " $$in_use " in *" $$name "*) ;; *) docker secret rm $$name >/dev/null 2>&1 || true;; esac; \
	done
	@$(PY) -m agentainer.programs.readiness swarm --url http://127.0.0.1:8091 --token-file $(SWARM_DIR)/admin.token

# NOTE: the programs go first, while Redis still answers: a worker's warm shutdown waits on
# Redis, and with Redis gone at once (a bare docker stack rm) it takes its whole grace
# period; then the agents (no monitor restarts them any more), then the rest of the stack
swarm-down:
	@ids=$$(docker service ls -q $(SWARM_PROGRAMS)); [ -z "$$ids" ] || docker service rm $$ids >/dev/null
	@ids=$$(docker service ls -q --filter label=agentainer.managed=1); [ -z "$$ids" ] || docker service rm $$ids >/dev/null
	@for i in $$(seq 60); do [ -z "$$(docker ps -aq $(SWARM_PROGRAMS))" ] && break; sleep 1; done
	@docker stack rm $(STACK) 2>/dev/null | grep -v '^$$' || true
	@for i in $$(seq 60); do \
		[ -z "$$(docker ps -aq --filter label=com.docker.stack.namespace=$(STACK); docker ps -aq --filter label=agentainer.managed=1)" ] && break; sleep 1; \
	done
	@for net in agentainer-swarm-net agentainer-swarm-internal agentainer-swarm-control; do \
		for i in $$(seq 30); do docker network inspect $$net >/dev/null 2>&1 || break; docker network rm $$net >/dev/null 2>&1 || sleep 1; done; \
	done
	@vols=$$(docker volume ls -q --filter label=com.docker.stack.namespace=$(STACK)); [ -z "$$vols" ] || docker volume rm $$vols >/dev/null
	@if [ -e $(SWARM_DIR)/swarm.created ]; then \
		docker swarm leave --force >/dev/null && rm -f $(SWARM_DIR)/swarm.created; \
		docker network rm docker_gwbridge >/dev/null 2>&1 || true; \
		! ip -4 addr show dev lo | grep -q ' $(SWARM_ADDR)/' || $(SUDO) ip addr del $(SWARM_ADDR)/32 dev lo; \
		echo "left the swarm swarm-up created"; \
	fi
	@echo "the Swarm stack is down"

test-swarm: venv swarm-up
	@status=0; $(PY) -m pytest $(PYTEST_ARGS) tests/swarm || status=$$?; \
	$(MAKE) --no-print-directory swarm-down; exit $$status

run: venv docker
	@mkdir -p $(DATA_DIR)/logs && chmod 700 $(DATA_DIR)
	@if $(SUPERVISORCTL) status >/dev/null 2>&1 || [ $$? -ne 4 ]; then \
		$(SUPERVISORCTL) update >/dev/null; $(SUPERVISORCTL) start all >/dev/null || true; \
	else \
		$(VENV)/bin/supervisord -c supervisord.conf; \
	fi
	@$(PY) -m agentainer.programs.readiness
	@$(SUPERVISORCTL) status

stop:
	@$(SUPERVISORCTL) shutdown 2>/dev/null || echo "the stack is not running"

verify:
	@[ -x $(PY) ] || { echo "BAD  venv          .venv is missing: run make run"; exit 1; }
	@$(PY) -m agentainer.programs.readiness verify

test: venv images lint
	$(PY) -m pytest $(PYTEST_ARGS) --ignore=tests/swarm tests
	$(MAKE) --no-print-directory test-swarm

# NOTE: the architecture (.importlinter's contracts) and the types (.mypy.ini), checked
# before any test runs
lint: venv
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy agentainer

test-persistence: venv images
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration/test_persistence.py

test-crash: venv images
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration/test_crash.py

test-network: venv images
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration/test_network.py

test-security: venv images
	$(PY) -m pytest $(PYTEST_ARGS) tests/security

# NOTE: nginx is the benchmark's yardstick, started by bench/run.py on loopback. Debian's
# package (nginx; bookworm's nginx-light is only nginx plus a module) would start and
# enable its own service on port 80: a policy-rc.d forbids the start while it installs
# (when the machine has none), and the service is disabled after
bench: venv images
	@missing=""; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		policy=/usr/sbin/policy-rc.d; ours=""; \
		trap '[ -z "$$ours" ] || $(SUDO) rm -f '"$$policy" EXIT; \
		if [ ! -e $$policy ]; then \
			printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$policy >/dev/null && \
			$(SUDO) chmod 755 $$policy && ours=1; \
		fi; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null \
			|| exit 1; \
		case " $$missing " in *" nginx "*) \
			if [ -d /run/systemd/system ]; then \
				$(SUDO) systemctl disable --now nginx >/dev/null 2>&1; \
			else \
				$(SUDO) update-rc.d nginx disable >/dev/null 2>&1; \
			fi; \
			[ ! -s /run/nginx.pid ] || $(SUDO) kill "$$(cat /run/nginx.pid)"; \
		esac; \
	fi; \
	true
	$(PY) bench/run.py

# NOTE: the Swarm stack against the supervisord-shaped one, in one run (bench/swarm.py)
bench-swarm: swarm-up
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }
	$(PY) -m bench.swarm

chaos: venv images
	$(PY) -m bench.chaos $(CHAOS_ARGS)

man: venv
	@for entry in $(MAN_PROGRAMS); do \
		prog=$${entry%%:*}; module=$${entry##*:}; \
		$(VENV)/bin/argparse-manpage --module agentainer.$$module \
			--function make_parser --prog $$prog --project-name agentainer \
			--version $$($(PY) -c 'import agentainer; print(agentainer.__version__)') \
			--description "$$($(PY) -c "import agentainer.$$module as m; print(m.make_parser().description)")" \
			--manual-title "Agentainer Manual" --include man/$$prog.include \
			--output $(MAN_OUT)/$$prog.1; \
	done
