"""The operator graph: Grain datasets and transformations that a pipeline compiles into."""
