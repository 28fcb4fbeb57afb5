"""Sharded sources: each is an ordered list of shards whose rows can be read from any row."""
