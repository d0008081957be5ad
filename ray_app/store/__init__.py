"""Durable job state: the SQL database and the JobStore actor that is its single writer."""
