//! Job storage (async predictions, scheduled batches) over a key-value store.
