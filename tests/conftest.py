pytest_plugins = [
    "tests.fixtures.ray_cluster",
    "tests.fixtures.database",
    "tests.fixtures.platform",
    "tests.fixtures.s3",
]
