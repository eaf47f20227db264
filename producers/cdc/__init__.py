"""Log-based capture of blue's changes: pgoutput over the replication protocol into Kafka."""
