"""Engine decode benchmark on the GPU: `python bench/engine.py [options]` == `m1 bench [options]`.

See `m1.bench` for what is measured; results land in bench/results/engine_*.json.
"""

import sys

from m1.bench import cli_main

if __name__ == "__main__":
    raise SystemExit(cli_main(sys.argv[1:]))
