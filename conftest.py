"""Registers mailgate's plugins; nothing else."""

pytest_plugins = [
    "plugins.partitions",
    "plugins.sandbox",
    "plugins.report",
    "plugins.preflight",
    "plugins.observations",
    "plugins.deploy",
    "plugins.signoff",
    "plugins.waivers",
    "plugins.closeout",
    "pytester",
]
