"""Registers mailgate's plugins; nothing else."""

pytest_plugins = ["plugins.partitions", "pytester"]
