"""The ground floor: configuration, PostgreSQL and Kafka client factories, logging,
metrics, errors, progress and reconnection. Imports nothing else of bluegreen."""
