# Shortcuts once the machine is set up (sh bootstrap setup).
.PHONY: setup run test unit lint check-config clean

setup:
	sh bootstrap setup

run:
	sh bootstrap run

test:
	sh bootstrap test

unit: setup
	.venv/bin/python -m pytest -q tests/unit

lint: setup
	.venv/bin/ruff check taskmasterd taskctl tests
	.venv/bin/mypy taskmasterd taskctl

check-config: setup
	.venv/bin/taskmasterd --check-config etc/taskmaster.yaml

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
