"""`bluegreen stack`: the local Kafka broker and PostgreSQL clusters (blue, green,
control) started from local binaries on loopback ports, tracked by pid, without Docker."""
