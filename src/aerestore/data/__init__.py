"""Data stages: download (raw images + manifest), prepare (clean/degraded pairs)."""
