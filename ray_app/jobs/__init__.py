"""The job model: the state machine, the job API's bodies and the trainer callbacks' bodies
(whose vocabulary and limits are the trainer contract's, sdk.contract)."""
