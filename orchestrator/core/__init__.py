"""The pure core: values, rules and policies; no I/O, no clock, no async."""
