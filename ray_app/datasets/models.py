"""Request and response bodies of the dataset and artifact API (DESIGN §10).

A dataset is a name (`dataset_id`, what a job's `dataset_id` names) with versions. A version is
one uploaded archive, identified by the SHA-256 of its bytes: uploading identical content again
makes no new version. A version goes UPLOADING → VALIDATING → VALID | INVALID; the report of its
validation (format, task type, classes, images per split, and every problem with the file it is
in) is kept either way, and a job on an invalid version is refused at creation.
"""

from __future__ import annotations

import enum
import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ray_app.jobs.model_bases import Strict, View
from ray_app.jobs.types import Text, Timestamp

DATASET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# a version may be named by a unique prefix of its hash, as git names commits
VERSION_REF_PATTERN = r"^[0-9a-f]{8,64}$"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_REPORTED_PROBLEMS = 200  # a report lists this many problems; problems_total counts them all


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    """An archive's version: the SHA-256 of its bytes, hex (the client computes it before the
    upload, the validation task again on what arrived)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class VersionState(enum.StrEnum):
    UPLOADING = "uploading"
    VALIDATING = "validating"
    VALID = "valid"
    INVALID = "invalid"


class Problem(BaseModel):
    """One thing wrong with a dataset, and where."""

    file: str | None = Field(default=None, description="the file it is in, relative to the dataset root "
                             "(or the archive member); null for the dataset as a whole")
    problem: str


class ValidationReport(BaseModel):
    """What validation found in one version."""

    format: Literal["dice", "yolo", "imagefolder"] | None = None
    task_type: str | None = None
    classes: list[str] = Field(default_factory=list)
    splits: dict[str, int] = Field(default_factory=dict, description="images per split (train, val, test)")
    images: int = 0
    annotations: int = Field(default=0, description="boxes, polygons or labels")
    problems: list[Problem] = Field(default_factory=list, description=f"at most {MAX_REPORTED_PROBLEMS}")
    problems_total: int = 0
    seconds: float = Field(default=0.0, description="how long validation took")

    @property
    def valid(self) -> bool:
        return self.problems_total == 0 and not self.problems


# ---------------------------------------------------------------- uploads


class UploadCreate(Strict):
    """POST /v1/datasets: open an upload of one archive (a folder is zipped by the client)."""

    dataset_id: str = Field(pattern=DATASET_ID_PATTERN, examples=["shapes"],
                            description="the dataset's name; created on its first upload")
    filename: Text = Field(min_length=1, max_length=255, examples=["shapes.zip"],
                           description="the archive's name: .zip, .tar, .tar.gz or .tgz")
    size_bytes: int = Field(strict=True, ge=1, le=5 * 2**40, description="the archive's size")
    sha256: str = Field(pattern=SHA256_PATTERN, description="SHA-256 of the archive's bytes, hex: the version")
    description: Text = Field(default="", max_length=2000)
    project_id: Text | None = Field(default=None, min_length=1, max_length=128, description=(
        "the project a new dataset goes to (default: `default`); a new version goes to its dataset's"))

    @field_validator("filename")
    @classmethod
    def _archive_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or not value.lower().endswith(ARCHIVE_SUFFIXES):
            raise ValueError(f"must be a file name ending in one of {', '.join(ARCHIVE_SUFFIXES)}")
        return value


class PartURL(BaseModel):
    part_number: int
    url: str = Field(description="presigned PUT URL for this part only; expires at expires_at")


class UploadView(BaseModel):
    """An open upload (or, with created=false and state past uploading, the existing version)."""

    dataset_id: str
    version: str
    state: VersionState
    created: bool = Field(description="false when this content was already uploaded: nothing to send")
    part_size: int = 0
    parts_total: int = 0
    parts_done: list[int] = Field(default_factory=list, description="parts the storage already has")
    urls: list[PartURL] = Field(default_factory=list, description="one per missing part")
    expires_at: Timestamp | None = None


# ---------------------------------------------------------------- datasets and versions


class VersionView(View):
    version: str
    state: VersionState
    filename: str
    size_bytes: int
    uri: str = Field(description="where trainers read it (s3://...)")
    format: str | None = None
    task_type: str | None = None
    classes: list[str] = Field(default_factory=list)
    splits: dict[str, int] = Field(default_factory=dict)
    images: int = 0
    report: ValidationReport | None = None
    created_at: Timestamp
    validated_at: Timestamp | None = None


class DatasetView(View):
    id: str
    description: str = ""
    project_id: str = "default"
    created_by: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    latest_valid_version: str | None = Field(default=None, description="what a job without dataset_version uses")
    versions: list[VersionView] = Field(default_factory=list, description="newest first")


class DatasetPage(BaseModel):
    items: list[DatasetView]
    next_cursor: str | None = None


# ---------------------------------------------------------------- samples


class SampleLabel(BaseModel):
    """One label of a sample, in the thumbnail's pixels: a box (and the polygon of a segmented
    object) with its class, or for classification the class alone."""

    class_name: str
    xyxy: list[float] | None = Field(default=None, min_length=4, max_length=4,
                                     description="[x1, y1, x2, y2]; absent for classification")
    polygon: list[list[float]] | None = Field(default=None, description="[[x, y], ...] of a segmented object")


class SampleView(BaseModel):
    """A sample image of a version: a JPEG thumbnail (at most 256 px on its longest side)."""

    file: str = Field(description="the image, relative to the dataset root")
    width: int = Field(description="the thumbnail's width")
    height: int
    labels: list[SampleLabel] = Field(default_factory=list)
    url: str = Field(description="presigned GET URL of the thumbnail")


class SamplePage(BaseModel):
    items: list[SampleView] = Field(description="at most 12; none for a version validated without samples")


# ---------------------------------------------------------------- artifacts


class ArtifactView(BaseModel):
    name: str = Field(description="GET /v1/jobs/{id}/artifacts/{name} downloads it")
    kind: Literal["checkpoint", "artifact"]
    size_bytes: int
    last_modified: Timestamp | None = None
    uri: str


class ArtifactPage(BaseModel):
    items: list[ArtifactView]
