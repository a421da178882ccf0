"""Limits: live-call slots (concurrency caps) and pacing (calls per second), kept in Redis."""
