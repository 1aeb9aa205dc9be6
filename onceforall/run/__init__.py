"""The run layer: a run's config (typed sections, YAML presets), what the config builds, its checkpoints and
its directory (metrics, cost, opening a trained run). Workflows work on runs through this layer only."""
