"""The apply service: Kafka -> decode -> transform -> validate -> batch -> apply -> commit."""
