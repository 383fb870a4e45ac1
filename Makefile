# The two commands of README.md: `make demo` and `make test`. Both set everything up first.
PY := .venv/bin/python

.PHONY: setup demo test lint bench deb clean
setup:
	scripts/setup.sh

demo: setup
	$(PY) -m sandbox.demo

test: setup
	scripts/test.sh

bench: setup
	$(PY) bench/certonly_speed.py

# The Debian package, built with Debian's debhelper/dh-python (installed if missing): build/deb/certbot-dane_*.deb
deb:
	scripts/deb.sh

clean:
	rm -rf .venv .pytest_cache .mypy_cache
