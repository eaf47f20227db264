"""cutover package."""
