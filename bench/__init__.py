"""Switchboard's benchmark: the gateway against a minimal forwarder, measured in the same run.

Run it with ``make bench`` (or ``.venv/bin/python bench/run.py --help``); see bench/README.md.
"""
