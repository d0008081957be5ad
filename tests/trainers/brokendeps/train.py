raise SystemExit("never runs: this trainer's environment cannot be built")
