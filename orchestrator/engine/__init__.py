"""The async scheduler: per-tenant windows, submit, poll, reconcile, deadlines."""
