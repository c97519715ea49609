"""Ray Serve reward deployment (issue 6)."""
