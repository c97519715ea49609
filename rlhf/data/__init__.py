"""Preference data: the parquet record schema, VideoAlign CSV import and row validation."""
