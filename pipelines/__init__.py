"""Dataflows: one module per pipeline, each exposing ``build(settings, *, source, sink)``."""
