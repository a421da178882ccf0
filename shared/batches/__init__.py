"""Batches: submit (JSON, call-bulk, CSV), the shared recipient checks, the views the API
shows, control (cancel, pause, resume, retry, delete) and the batch repository."""
