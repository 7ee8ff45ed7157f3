"""Feature indexes at corpus scale: ``store.FeatureIndex`` (open, read, build, add, export), its on-disk format
(``schema``), the protocol it shares with the reference corpus (``source``), and the builder's parts it calls:
``build`` (shards, resume, merge), ``partial`` / ``rows`` (mergeable statistics), ``shard``, ``ray_engine``,
``corpus``, ``hashes``, ``export``."""
