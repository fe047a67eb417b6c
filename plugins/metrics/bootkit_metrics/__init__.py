"""bootkit-metrics: the worker's tasks and every step's lifecycle, for Prometheus."""
