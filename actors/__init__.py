"""Ray actors for the online loop (issue 6)."""
