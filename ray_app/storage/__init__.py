"""S3-compatible object storage for the platform: the embedded SeaweedFS server and helpers."""
from .s3 import (S3Settings, delete_prefix, ensure_bucket, format_s3_uri, make_client, object_exists,
                 parse_s3_uri, settings_from, upload_dataset)
from .s3_server import S3ServerError, SeaweedS3Server, find_weed, free_port

__all__ = ["S3Settings", "settings_from", "make_client", "ensure_bucket", "object_exists", "upload_dataset",
           "delete_prefix", "parse_s3_uri", "format_s3_uri", "SeaweedS3Server", "S3ServerError", "find_weed",
           "free_port"]
