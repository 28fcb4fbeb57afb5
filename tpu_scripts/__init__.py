"""TPU VM setup and launch scripts, a JAX training example and a local multi-host simulator."""
