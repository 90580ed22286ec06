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
