# The two commands for a fresh machine:
#   make demo   install, then prepare real PubMed shards, continue pre-training a real BERT with DeepSpeed
#               (2 CPU ranks, or every GPU), export it, and fine-tune + score NER when the data is there
#   make test   install, then run the test suite
.PHONY: demo test install install-dev
install:
	bash scripts/setup_env.sh
install-dev:
	bash scripts/setup_env.sh dev
demo: install
	bash scripts/demo.sh
test: install-dev
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/python -m pytest -q tests
