"""The custom resources, as pydantic models: the single source of the CRDs and of spec validation.

``crdgen`` turns these models into ``crds/*.yaml``; the handlers parse ``spec`` with the same models,
so what the API server admits and what the operator accepts never drift apart. Field names are the
camelCase Kubernetes spelling (aliases); Python code uses the snake_case attribute names.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

GROUP = "codetether.run"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "codetether"

POOL_KIND = "CodetetherWorkerPool"
POOL_PLURAL = "codetetherworkerpools"
POOL_SINGULAR = "codetetherworkerpool"
POOL_SHORT_NAMES = ["ctwp"]

CODEBASE_KIND = "Codebase"
CODEBASE_PLURAL = "codebases"
CODEBASE_SINGULAR = "codebase"
CODEBASE_SHORT_NAMES = ["ctcb"]

# A StatefulSet stamps `controller-revision-hash: <name>-<10 chars>` on its pods, and label values
# stop at 63 characters: 63 - 11 = 52. That also keeps `<pool>-<ordinal>` a valid pod name.
MAX_POOL_NAME = 52
POOL_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # DNS-1035: the headless Service carries it
# Pod names of a pool; also valid server worker ids (contract.ID_PATTERN).
POD_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HTTP_URL_PATTERN = r"^https?://[^\s/?#]+[^\s]*$"
REDIS_URL_PATTERN = r"^rediss?://[^\s]*$"
GIT_URL_PATTERN = r"^((https?|ssh|git)://[^\s]+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+)$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|[KMGTPE]i?|[mkMGTPE])?$"
ABSOLUTE_PATH_PATTERN = r"^/[^\x00]*$"
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

_POOL_NAME_RE = re.compile(POOL_NAME_PATTERN)

PRESERVE_UNKNOWN = {"x-kubernetes-preserve-unknown-fields": True, "type": "object"}
INT_OR_STRING = {"x-kubernetes-int-or-string": True}


class _Spec(BaseModel):
    # Unknown fields are ignored: an older operator reading a newer object must not fail.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=True
    )


FreeForm = Annotated[dict[str, Any], Field(json_schema_extra=PRESERVE_UNKNOWN)]
Quantity = Annotated[str | int, Field(json_schema_extra=INT_OR_STRING)]
K8sName = Annotated[str, Field(min_length=1, max_length=253, pattern=K8S_NAME_PATTERN)]


class ImagePullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class AccessMode(StrEnum):
    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"
    READ_WRITE_MANY = "ReadWriteMany"


class SecretKeyRef(_Spec):
    name: K8sName = Field(description="Name of a Secret in the pool's namespace.")
    key: str = Field(
        default="token",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in the Secret holding the bearer token.",
    )


class ServerSpec(_Spec):
    url: str = Field(
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Base URL of the CodeTether server the workers and the operator talk to "
        "(http:// or https://), e.g. http://codetether-server:8000.",
    )
    redis_url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=REDIS_URL_PATTERN,
        description="Redis URL (redis:// or rediss://) for reactive task delivery. Without it the "
        "workers poll every pollIntervalSeconds.",
    )
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding the bearer token for the server. The workers get it as "
        "A2A_AUTH_TOKEN; the operator reads it to register codebases.",
    )


class StorageSpec(_Spec):
    size: Quantity = Field(default="10Gi", description="Size of each pod's codebases volume.")
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="StorageClass of the volume; the cluster default when unset.",
    )
    access_modes: list[AccessMode] = Field(
        default_factory=lambda: [AccessMode.READ_WRITE_ONCE],
        min_length=1,
        description="Access modes of the codebases volume.",
    )
    mount_path: str = Field(
        default="/codebases",
        max_length=1024,
        pattern=ABSOLUTE_PATH_PATTERN,
        description="Where the codebases volume is mounted in the worker container.",
    )


class ResourcesSpec(_Spec):
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Resource requests of the worker."
    )
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Resource limits of the worker.")


class EnvVar(_Spec):
    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: FreeForm | None = Field(
        default=None, description="A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, ...)."
    )


class PoolSpec(_Spec):
    """Desired state of a pool of CodeTether workers: one StatefulSet pod per worker."""

    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Number of worker pods. The only field to edit to scale (also via kubectl scale, HPA, KEDA).",
    )
    image: str = Field(min_length=1, max_length=1024, description="Worker container image.")
    image_pull_policy: ImagePullPolicy = Field(
        default=ImagePullPolicy.IF_NOT_PRESENT, description="Image pull policy of the worker container."
    )
    image_pull_secrets: list[K8sName] = Field(
        default_factory=list, description="Names of Secrets used to pull the worker image."
    )
    server: ServerSpec = Field(description="The CodeTether server the pool works for.")
    capabilities: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=lambda: ["agent", "build", "deploy"],
        max_length=100,
        description="Capabilities every worker advertises (tasks may require a subset).",
    )
    poll_interval_seconds: float = Field(
        default=5,
        gt=0,
        le=3600,
        description="Seconds between task polls (the fallback when Redis delivery is unavailable).",
    )
    max_concurrent_tasks: int = Field(default=1, ge=1, le=1000, description="Tasks one worker runs at once.")
    task_timeout_seconds: int | None = Field(
        default=None, ge=1, le=7 * 86400, description="Kill an agent run after this many seconds."
    )
    health_port: int = Field(
        default=8081, ge=1024, le=65535, description="Port of the worker's /healthz, /readyz and /metrics."
    )
    drain_timeout_seconds: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="How long a stopping worker may finish running tasks before handing them back. "
        "The pod's terminationGracePeriodSeconds is this plus a small margin.",
    )
    max_unavailable: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="PodDisruptionBudget: worker pods voluntary disruptions may take.",
    )
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Per-pod codebases volume.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Worker container resources.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables of the worker.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[FreeForm] = Field(default_factory=list, description="Pod tolerations.")
    affinity: FreeForm | None = Field(default=None, description="Pod affinity (Kubernetes Affinity object).")
    topology_spread_constraints: list[FreeForm] = Field(
        default_factory=list, description="Pod topologySpreadConstraints."
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, description="Pod priorityClassName."
    )
    service_account_name: K8sName | None = Field(
        default=None, description="ServiceAccount of the worker pods (workers need no Kubernetes API access)."
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations on the pods."
    )
    pod_labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the pods.")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Spec):
    type: str = Field(description="Ready, Progressing or Degraded.")
    status: ConditionStatus
    reason: str = Field(description="A stable CamelCase reason, e.g. ServerUnreachable.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = None


class PoolPhase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"


class PoolStatus(_Spec):
    replicas: int = Field(default=0, description="Pods the StatefulSet has.")
    ready_replicas: int = Field(default=0, description="Pods that are ready.")
    registered_workers: int = Field(default=0, description="Pods registered with the server.")
    busy_workers: int = Field(default=0, description="Registered workers running tasks.")
    idle_workers: int = Field(default=0, description="Registered workers with no task.")
    selector: str = Field(default="", description="Label selector of the pods (for the scale subresource).")
    observed_generation: int | None = Field(default=None, description="Generation the status describes.")
    phase: PoolPhase = Field(
        default=PoolPhase.PENDING, description="Summary: Pending, Progressing, Ready, Degraded."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing, Degraded.")


class PlacementSpec(_Spec):
    ordinal: int | None = Field(
        default=None, ge=0, le=999, description="Pin to the pod with this ordinal (<pool>-<ordinal>)."
    )
    pod: str | None = Field(
        default=None,
        max_length=63,
        pattern=POD_NAME_PATTERN,
        description="Pin to this pod of the pool (a name like <pool>-2).",
    )

    @model_validator(mode="after")
    def _one_of(self) -> PlacementSpec:
        if self.ordinal is not None and self.pod is not None:
            raise ValueError("set placement.ordinal or placement.pod, not both")
        return self


class GitSource(_Spec):
    url: str = Field(max_length=4096, pattern=GIT_URL_PATTERN, description="Clone URL (https, ssh, git).")
    ref: str | None = Field(default=None, max_length=253, description="Branch, tag or commit.")


class CodebaseSpec(_Spec):
    """A codebase served by one pod of a pool (or the pool's global codebase)."""

    pool: str = Field(
        min_length=1,
        max_length=MAX_POOL_NAME,
        pattern=POOL_NAME_PATTERN,
        description="Name of the CodetetherWorkerPool, in the same namespace.",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Name on the server; metadata.name when unset.",
    )
    path: str | None = Field(
        default=None,
        max_length=4096,
        pattern=ABSOLUTE_PATH_PATTERN,
        description="Absolute path in the worker pod; <storage.mountPath>/<metadata.name> when unset.",
    )
    description: str = Field(default="", max_length=10_000, description="Free text shown on the server.")
    git: GitSource | None = Field(default=None, description="Where the worker clones the codebase from.")
    placement: PlacementSpec | None = Field(
        default=None,
        description="Pin to one pod of the pool. Unset: the operator picks the pod with the fewest codebases.",
    )
    global_: bool = Field(
        default=False,
        alias="global",
        description="Register as the global codebase of every pod of the pool (tasks with codebase_id "
        '"global"). Cannot be combined with placement.',
    )

    @model_validator(mode="after")
    def _global_excludes_placement(self) -> CodebaseSpec:
        if (
            self.global_
            and self.placement is not None
            and (self.placement.ordinal is not None or self.placement.pod is not None)
        ):
            raise ValueError("global: true cannot be combined with placement")
        return self


class CodebasePhase(StrEnum):
    PENDING = "Pending"
    REGISTERED = "Registered"
    FAILED = "Failed"


class CodebaseStatus(_Spec):
    codebase_id: str | None = Field(default=None, description="Id of the registration on the server.")
    worker: str | None = Field(default=None, description="Pod (worker id) the codebase is assigned to.")
    workers: list[str] = Field(
        default_factory=list, description="For a global codebase: the pods that registered it."
    )
    phase: CodebasePhase = Field(default=CodebasePhase.PENDING, description="Pending, Registered or Failed.")
    server_url: str | None = Field(
        default=None,
        description="Server the registration was made on (used to remove it even after the pool is gone).",
    )
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Token Secret used for that server."
    )
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Degraded.")


class SpecError(ValueError):
    """A spec that cannot be reconciled; ``str()`` names every bad field."""


def _format_errors(error: ValidationError, root: str) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"] if p != "__root__")
        where = f"{root}.{location}" if location else root
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_pool_spec(spec: dict[str, Any]) -> PoolSpec:
    try:
        return PoolSpec.model_validate(spec)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, "spec")) from None


def parse_codebase_spec(spec: dict[str, Any]) -> CodebaseSpec:
    try:
        return CodebaseSpec.model_validate(spec)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, "spec")) from None


def check_pool_name(name: str) -> None:
    if len(name) > MAX_POOL_NAME:
        raise SpecError(f"metadata.name: at most {MAX_POOL_NAME} characters, so pod names stay valid")
    if not _POOL_NAME_RE.match(name):
        raise SpecError("metadata.name: must be a DNS-1035 label (lowercase letters, digits, '-')")
