"""The top floor, the faces: the CLI, the local stack, the demo, the benchmarks and the
chaos suite. The only place that wires a domain (schemas/catalog) into the engine."""
