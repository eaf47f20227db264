"""Log-based capture of blue's changes: pgoutput over the replication protocol into Kafka.

``stream`` (the replication connection) and ``pgoutput`` (its messages) feed
``changes`` (envelopes, fences, truncates); ``publisher`` sends them a transaction at
a time and confirms in commit order; ``blue_link`` and ``kafka_link`` hold each side's
connections; ``service`` is the loop that rides through restarts of either.
"""
