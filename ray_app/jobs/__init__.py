"""The job model: the state machine and the schemas shared by the API and the trainer contract."""
