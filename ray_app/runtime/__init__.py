"""Running trainers on Ray: the registry of trainers, their runtime_env, the TrainerRunner actor
that owns one attempt's process, and the controller that launches, watches and retries."""
