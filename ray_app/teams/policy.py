"""Who may do what: the one table of the access model (DESIGN §12), pure.

Projects are the unit of access. A user holds a role in each project they belong to; a platform
admin (the bootstrap tokens of VTP_API_TOKENS, or a user made one) may do everything. For a
resource in a project the caller holds no role in, the answer is HIDE: the API says 404 exactly as
for a resource that does not exist, so a project's jobs and datasets cannot be probed from outside
it. A caller who sees the project but whose role is too low gets FORBID (403, naming the role it
takes).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Role(enum.IntEnum):
    """A member's role in a project; each includes what the lower ones may do."""

    VIEWER = 1
    MEMBER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        return cls[value.upper()]


class Action(enum.Enum):
    """What a request does to a project's resources (the API maps each route to one)."""

    READ = "read"                      # jobs, histories, streams, artifacts, exports, datasets, members
    SUBMIT = "submit"                  # create jobs (and sweeps), upload datasets
    PREDICT = "predict"                # run a job's model
    EXPORT = "export"                  # export a job's model
    CANCEL = "cancel"                  # cancel a job: one's own as a member, anyone's as an admin
    DELETE_DATASET = "delete_dataset"
    MANAGE_MEMBERS = "manage_members"


# the table: the lowest role that may take each action in a project
REQUIRED: dict[Action, Role] = {
    Action.READ: Role.VIEWER,
    Action.SUBMIT: Role.MEMBER,
    Action.PREDICT: Role.MEMBER,
    Action.EXPORT: Role.MEMBER,
    Action.CANCEL: Role.MEMBER,  # and only their own job: see OWN_ONLY
    Action.DELETE_DATASET: Role.ADMIN,
    Action.MANAGE_MEMBERS: Role.ADMIN,
}
# actions a role below ADMIN may take on what it created only
OWN_ONLY = frozenset({Action.CANCEL})


class Decision(enum.Enum):
    ALLOW = "allow"
    HIDE = "hide"      # 404: the caller may not know that it exists
    FORBID = "forbid"  # 403: the caller sees it, and their role does not allow this


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (`user_id`), the token they called with (its name, never its
    secret), whether they are a platform admin, and their role in each project."""

    user_id: str
    token_name: str
    platform_admin: bool = False
    roles: dict[str, Role] = field(default_factory=dict)
    token_id: str | None = None  # None for a bootstrap token (VTP_API_TOKENS)

    def role(self, project_id: str) -> Role | None:
        return self.roles.get(project_id)

    def sees(self, project_id: str) -> bool:
        return self.platform_admin or project_id in self.roles

    def visible_projects(self) -> list[str] | None:
        """The projects whose resources this caller may list; None: all of them."""
        return None if self.platform_admin else sorted(self.roles)


def decide(principal: Principal, action: Action, project_id: str, owner: str | None = None) -> Decision:
    """May `principal` take `action` on a resource of `project_id` created by `owner`?"""
    if principal.platform_admin:
        return Decision.ALLOW
    role = principal.role(project_id)
    if role is None:
        return Decision.HIDE
    if role < REQUIRED[action]:
        return Decision.FORBID
    if action in OWN_ONLY and role < Role.ADMIN and owner != principal.user_id:
        return Decision.FORBID
    return Decision.ALLOW


def refusal(principal: Principal, action: Action, project_id: str) -> str:
    """Why a FORBID: the caller's role and the role the action takes (nothing they cannot see)."""
    role = principal.role(project_id)
    held = role.label if role is not None else "none"
    needed = REQUIRED[action]
    if action in OWN_ONLY and role is not None and role >= needed:
        return (f"your role in project {project_id} is {held}: a {needed.label} may {action.value} only "
                f"what they created; another's takes {Role.ADMIN.label}")
    return f"your role in project {project_id} is {held}; {action.value.replace('_', ' ')} takes {needed.label}"


# The user the bootstrap tokens (VTP_API_TOKENS) act as: a platform admin, made by the migration
# that introduced teams, so a fresh install, and an upgraded one, works as before.
BOOTSTRAP_USER = "admin"
# Where jobs and datasets go when no project is named (and where datasets made before teams went).
DEFAULT_PROJECT = "default"
