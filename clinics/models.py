"""The clinics app's models, gathered from its sub-packages for Django's app registry."""

from clinics.records.models import Patient
from clinics.tenancy.models import ApiKey, AuditEntry, Clinic, Invitation, Membership, User

__all__ = ["ApiKey", "AuditEntry", "Clinic", "Invitation", "Membership", "Patient", "User"]
