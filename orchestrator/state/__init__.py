"""Where item states become durable: the store seam (store), the file-backed checkpoint and its
lock (checkpoint, snapshot, codec), the typed run meta (meta), the recalled list (recall), the
one atomic file write (atomic) and the garbage-collector pause for large states (gcpause)."""
