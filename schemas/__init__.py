"""The contract between producers and consumers: the change envelope, its Avro codec
and compatibility rules, control messages (fences, heartbeats), LSNs, and what the
engine knows of a source table. The demo domain lives in ``schemas.catalog``."""
