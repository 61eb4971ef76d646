# bbf-dopamine: BBF (Schwarzer et al., ICML 2023) as a Dopamine 4.1.2 plugin.
#   make demo   install, then a few-minute BBF run on real Pong (runs/demo)
#   make test   install, then the test suite
# PYTHON is the interpreter of the environment to install into (default: the
# `python` on PATH, e.g. an activated virtual environment).
PYTHON ?= python

.PHONY: install demo test

install:
	PYTHON=$(PYTHON) bash scripts/install.sh test

demo: install
	$(PYTHON) -m dopamine.discrete_domains.train --base_dir runs/demo \
	  --gin_files gin_configs/bbf_cpu_demo.gin

# One pytest process per test file, two at a time (scripts/run_tests.py says
# why: a single process crashed XLA:CPU as its memory maps grew).
test: install
	$(PYTHON) scripts/run_tests.py
