"""Workflows: what the commands do, as library functions on run directories (train, evaluate, compare,
search, export, latency tables, gradient analysis, the demo). The CLI only parses arguments for them."""
