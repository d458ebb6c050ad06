"""The ORM tables, one module per table. Importing this package registers them all."""

from conveyor.server.models.agent import Agent
from conveyor.server.models.api_token import ApiToken, TokenScope
from conveyor.server.models.artifact import Artifact
from conveyor.server.models.audit_event import AuditEvent
from conveyor.server.models.forge_link import ForgeKind, ForgeLink
from conveyor.server.models.job import Job
from conveyor.server.models.membership import Membership, Role
from conveyor.server.models.notification_delivery import (
    DeliveryChannel,
    DeliveryStatus,
    NotificationDelivery,
)
from conveyor.server.models.notification_hook import HookKind, NotificationHook, NotificationTrigger
from conveyor.server.models.project import Project, Visibility
from conveyor.server.models.project_poll import ProjectPoll
from conveyor.server.models.run import Run
from conveyor.server.models.schedule import Schedule
from conveyor.server.models.secret import Secret
from conveyor.server.models.step import Step
from conveyor.server.models.user import User
from conveyor.server.models.webhook_delivery import DeliveryResult, WebhookDelivery

__all__ = [
    "Agent",
    "ApiToken",
    "Artifact",
    "AuditEvent",
    "DeliveryChannel",
    "DeliveryResult",
    "DeliveryStatus",
    "ForgeKind",
    "ForgeLink",
    "HookKind",
    "Job",
    "Membership",
    "NotificationDelivery",
    "NotificationHook",
    "NotificationTrigger",
    "Project",
    "ProjectPoll",
    "Role",
    "Run",
    "Schedule",
    "Secret",
    "Step",
    "TokenScope",
    "User",
    "Visibility",
    "WebhookDelivery",
]
