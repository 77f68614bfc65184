"""Grafana dashboards and alert rules built as code."""
