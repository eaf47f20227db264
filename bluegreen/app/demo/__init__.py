"""The end-to-end demo: every service, a live write and read load, cutover and rollback."""
