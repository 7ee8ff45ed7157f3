"""Feature indexes at corpus scale: build (local or Ray), extend, export. Reading lives in ``core.feature_index``
so a Lab can hold an index; this layer computes and exports them."""
