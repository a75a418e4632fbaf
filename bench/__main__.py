"""``python -m bench NAME [ARGS]``: run one benchmark, or ``all``."""

from bench.run import main

main()
