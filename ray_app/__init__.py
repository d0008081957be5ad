"""Vision Training Platform on Ray.

Folders, one concept each:
  jobs/     the job model: states (the transition table), the API's and the callbacks' bodies
            (the trainer contract itself: trainers/sdk/contract.py, imported as sdk.contract)
  store/    durable job state: the SQL database and the detached JobStore actor (single writer)
  auth/     API tokens for users, JWT callback tokens for trainers
  api/      the HTTP layer (FastAPI hosted by Ray Serve), kept thin
  runtime/  running trainers on Ray: registry, runtime_env, TrainerRunner actor, controller
  storage/  S3-compatible object storage and the embedded SeaweedFS server
  datasets/ datasets as API resources: uploads, validation on arrival; synthetic datasets
  client/   the typed Python client of the API (sync and async)
  cli/      the `vtp` command, built on the client
"""

__version__ = "0.1.0"
