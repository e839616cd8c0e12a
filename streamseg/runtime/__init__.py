"""The machinery of a run: the pipeline's lifecycle, its plan, the stage loops, the output fan-out, channels and the batcher, stats and the allocator."""
