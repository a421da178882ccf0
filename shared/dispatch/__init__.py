"""Dispatch: fanning calls out, the tick, the dial (its gates, pacing and fence), provider
errors, reconcile, hang-up and the answering machine, and what they read of calls."""
