"""`m1 bench`: decode throughput of the hybrid shapes against a same-size transformer.

- `common`: the environment record, named shapes (tiny ones for CPU smoke runs), byte counts, JSON records;
- `fixed`: the fixed workload (decode step times, their integration, end-to-end checks, the plot);
- `reasoning`: the reasoning workload (lognormal completion lengths, both KV policies, TTFT/ITL);
- `cli`: the command line.

The engine is driven through its public API only (`Engine.generate`, and `fill_random`,
`place_rows`, `decode_step`, `prefill`, `capture_graphs` for steps timed alone).
"""
