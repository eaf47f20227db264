"""Log-based capture of blue's changes: pgoutput over the replication protocol into Kafka.

``stream`` (the replication connection) and ``pgoutput`` (its messages) feed
``changes`` (envelopes, fences, truncates); ``publisher`` sends them a transaction at
a time and confirms in commit order; ``source_link`` and ``kafka_link`` hold each side's
connections; ``loop`` rides through restarts of either, and ``service`` wires blue into
it. ``origins`` leaves out transactions another bluegreen applier wrote. Green's
reverse capture (``producers.reverse``) runs the same loop on green.
"""
