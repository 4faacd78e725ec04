"""Prefect flows that run and schedule the DVC pipeline: `retrain` and `enroll-data`."""
