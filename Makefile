# Shortcuts once the machine is set up (sh bootstrap setup).
.PHONY: setup run test unit lint check-config clean deb

setup:
	sh bootstrap setup

run:
	sh bootstrap run

test:
	sh bootstrap test

unit: setup
	.venv/bin/python -m pytest -q tests/unit

lint: setup
	.venv/bin/ruff check taskmasterd taskctl taskweb tests bench
	.venv/bin/mypy taskmasterd taskctl taskweb

check-config: setup
	.venv/bin/taskmasterd --check-config etc/taskmaster.yaml

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Debian package, built out of tree in build/deb/src (a copy of the tracked
# and untracked-but-not-ignored files, with packaging/debian as debian/) by
# Debian's own python3 (a clean PATH: no .venv, no pyenv). Leaves
# build/deb/taskmasterd_<version>_all.deb and fails on lintian errors.
DEB_VERSION = $(shell dpkg-parsechangelog -l packaging/debian/changelog -S Version)
DEB_UPSTREAM = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' taskmasterd/__init__.py)
DEB_FILE = build/deb/taskmasterd_$(DEB_VERSION)_all.deb
DEB_ENV = env -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP -u VIRTUAL_ENV -u PYENV_VERSION \
	PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The build-time smoke test (debian/smoke-test) needs python3-dbus-next, python3-jeepney and
# python3-yaml; without them, build with the nocheck profile instead of failing.
DEB_NOCHECK = $(shell dpkg-checkbuilddeps packaging/debian/control >/dev/null 2>&1 || echo nocheck)

deb:
	@test "$(DEB_VERSION)" = "$(DEB_UPSTREAM)-1" || { echo "deb: packaging/debian/changelog \
	is at $(DEB_VERSION) but taskmasterd.__version__ is $(DEB_UPSTREAM): add a changelog entry" >&2; exit 1; }
	rm -rf build/deb
	mkdir -p build/deb/src
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git ls-files -z --cached --others --exclude-standard \
		| tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null \
		| tar -xf - -C build/deb/src; \
	else \
		tar --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
		    --exclude=__pycache__ --exclude='./.*_cache' --exclude=./.hypothesis -cf - . | tar -xf - -C build/deb/src; \
	fi
	rm -rf build/deb/src/debian
	cp -r packaging/debian build/deb/src/debian
	@if [ -n "$(DEB_NOCHECK)" ]; then echo "deb: `dpkg-checkbuilddeps packaging/debian/control 2>&1`;" \
		"building with the nocheck profile (no build-time smoke test)" >&2; fi
	cd build/deb/src && $(DEB_ENV) \
		$(if $(DEB_NOCHECK),DEB_BUILD_PROFILES=nocheck DEB_BUILD_OPTIONS=nocheck) \
		dpkg-buildpackage -us -uc -b
	$(DEB_ENV) lintian --fail-on error --tag-display-limit 0 $(DEB_FILE)
	@echo "deb: $(DEB_FILE)"

# Benchmarks against supervisord (bench/README.md): a table on stdout, JSON in
# bench/results/. BENCH_ARGS=--quick for a shorter run, e.g. --only restart,stop.
BENCH_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
.PHONY: bench
bench:
	$(BENCH_PYTHON) bench/run.py $(BENCH_ARGS)
