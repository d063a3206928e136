"""The live web dashboard and Prometheus endpoint of `sound-monitor run` (YAML `http:`)."""

from .sink import DashboardSink

__all__ = ["DashboardSink"]
