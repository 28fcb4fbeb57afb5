"""The operator graph: the plan a loader compiles, and the Grain datasets it is built from.

Glossary (one word, one meaning, in the code past the public boundary):

- **shard**: one file (or one piece of a dataset) of a source; addressed by its index.
- **address**: ``(shard, row)``, a row's place in its source.
- **block**: the unit random access reads at once (a Parquet row group, 1024 JSON lines); the
  block cache holds blocks.
- **epoch order**: the pure function from a position to an address (``order.EpochOrder``).
- **window**: consecutive rows shuffled among each other: in indexed mode the epoch order's
  (the public ``shuffle_buffer_size`` sets it), after packing ``Pack(shuffle_rows=...)``'s; in
  streaming mode ``shuffle_buffer_size`` sets a **shuffle buffer** instead, which holds rows
  and is saved with the state.
- **position**: an index into the global order; a **global batch** covers ``global_batch_size``
  consecutive positions, and each host serves its **local batch** (``batch_size``) of it.
- **pass**: what one ``for`` loop over the loader yields (``num_epochs`` epochs).
- **row ops**: per-row Grain operations (maps, filters, the skipped-row filter); a filter
  changes the row count, so hosts then **split** global batches after the row ops.
- **columnar**: batches gathered column by column from Arrow blocks, without dict rows.
- **plan**: the compiler's decisions (``graph.plan.Plan``); ``loader.describe()`` prints it.
- **chunk**: consecutive items handled together: in ``order`` and ``indexed_dataset``, 1024
  positions whose addresses are computed together; in ``chunked_map``, the rows a batched map
  (a tokenizer) is given in one call.
- **mixing block**: ``block_size`` consecutive positions of a mixture, whose rows per source
  follow the weights (``mix_order``).
"""
