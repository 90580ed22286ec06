"""Where item states become durable: the store seam, the checkpoint, its codec and lock."""
