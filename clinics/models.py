"""The clinics app's models, gathered from its sub-packages for Django's app registry."""

from clinics.events.models import Event, EventCounter
from clinics.records.models import DirectUpload, Image, Patient, Study
from clinics.tenancy.models import ApiKey, AuditEntry, Clinic, IdempotencyRecord, Invitation, Membership, User
from clinics.webhooks.models import WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Clinic",
    "DirectUpload",
    "Event",
    "EventCounter",
    "IdempotencyRecord",
    "Image",
    "Invitation",
    "Membership",
    "Patient",
    "Study",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
]
