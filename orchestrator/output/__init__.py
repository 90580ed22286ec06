"""Views of the stored state: reports, progress, metrics, timeline, plan tables."""
