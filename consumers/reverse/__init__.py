"""The reverse applier (issue 14): green's changes back into blue once writes are on green.

reverse topic -> decode -> batch -> one blue transaction per batch (lock positions,
read green, inverse, write the difference, record touched keys and positions, all
under a replication origin blue's forward capture skips) -> commit Kafka offsets.
"""
