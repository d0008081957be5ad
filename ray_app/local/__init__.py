"""The single-machine platform: Ray head, SeaweedFS S3, SQLite, MLflow store, Serve on 127.0.0.1."""
