"""ai-ueba streaming runtime: settings, event model, Kafka topics, workers, sinks and CLI."""

__version__ = "0.1.0"
