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

# The suite runs in two processes: in one, XLA:CPU crashed (segfault while
# compiling) after about 300 of its ~490 tests, each test adding compiled
# programs and memory maps to the process.
test: install
	$(PYTHON) -m pytest -q tests/test_[a-l]*.py
	$(PYTHON) -m pytest -q tests/test_[m-z]*.py
