"""Drift: sampled live traffic against each version's reference (docs/user-guide.md: Drift)."""
