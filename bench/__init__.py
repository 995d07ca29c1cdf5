"""quicfleet benchmarks: each module's `main()` prints figures and ratios against a baseline from the same run."""
