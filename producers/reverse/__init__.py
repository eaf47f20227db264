"""Green's reverse capture: while writes are on green, every committed green change
goes back to blue through the reverse topic.

``setup`` creates (at ``cutover --writes``) and drops (at ``rollback --writes``) green's
publication and slot; ``changes`` turns green's pgoutput stream into
``schemas.reverse.GreenChange`` events (pure); ``service`` is the long-lived
``bluegreen reverse-cdc``, which waits while the slot does not exist and streams it
with the forward capture's machinery (``producers.cdc``) while it does.
"""
