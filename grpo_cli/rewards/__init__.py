"""Rewards: `catalog` (functions by name or path), `workers` (isolated, time-limited calls),
`scoring` (RewardSet: the configured functions, weighted into `Scores`), `process` (step
rewards). This package's import stays light: reward worker processes load it without torch."""
