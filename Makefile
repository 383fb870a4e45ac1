# The two commands of README.md: `make demo` and `make test`. Both set everything up first.
PY := .venv/bin/python

.PHONY: setup demo test lint bench clean
setup:
	scripts/setup.sh

demo: setup
	$(PY) -m sandbox.demo

test: setup
	scripts/test.sh

bench: setup
	$(PY) bench/certonly_speed.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache
