"""`bluegreen bench`: measured figures — the COPY baseline against the pipeline, CDC
latency under load, codec, snapshot and apply throughput, peak memory — each in
scratch databases or on the local stack."""
