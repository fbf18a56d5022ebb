"""Retention: what is due (pure rules) and the sweeper that deletes it through the archive."""
