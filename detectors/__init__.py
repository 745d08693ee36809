"""Per-identity baselines and anomaly scorers for AI workloads. Pure library: no Kafka, no Faust."""
