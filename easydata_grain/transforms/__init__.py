"""Transforms between source and batch: Grain map/filter operations and batch collation."""
