"""The simulated cloud's accounts (domains) and their projects per region."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    region: str


@dataclass
class Account:
    """A cloud account (domain) with one AK/SK pair and its projects per region."""

    name: str
    domain_id: str
    access_key: str
    secret_key: str
    security_token: str | None = None
    token_expires_at: float | None = None  # a temporary token stops working after this
    agencies: frozenset[str] | None = None  # None: any non-empty agency name is accepted
    projects: dict[str, list[Project]] = field(default_factory=dict)  # region -> [default, ...]
    denied: set[str] = field(default_factory=set)  # kinds of call the key's user may not make

    def refusal(self, kind: str) -> tuple[int, str | None, str] | None:
        """(status, code, message) when the user lacks the permission for ``kind``: IAM's own
        403 (no string code) for the project lookup, the gateway's ``APIGW.0302`` for IMS."""
        if kind not in self.denied:
            return None
        if kind == "iam":
            return (
                403,
                None,
                ("You are not authorized to perform the requested action: iam:projects:list."),
            )
        return 403, "APIGW.0302", "The IAM user is not authorized to access the API."

    def project(self, region: str, name: str | None = None) -> Project | None:
        """The project of ``region`` named ``name`` (default: the region's default project)."""
        for project in self.projects.get(region, []):
            if project.name == (name or region):
                return project
        return None

    def project_by_id(self, project_id: str) -> Project | None:
        for projects in self.projects.values():
            for project in projects:
                if project.id == project_id:
                    return project
        return None
