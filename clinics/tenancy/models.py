"""Tenancy: people, clinics, memberships with roles, invitations, API keys, audit."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower
from django.utils.timezone import now


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    VET = "vet", "Veterinarian"
    TECHNICIAN = "technician", "Technician"
    VIEWER = "viewer", "Viewer"


# Each role can do everything the roles after it can.
ROLE_RANK: dict[str, int] = {
    Role.VIEWER: 10,
    Role.TECHNICIAN: 20,
    Role.VET: 30,
    Role.ADMIN: 40,
    Role.OWNER: 50,
}


def role_at_least(role: str, minimum: str) -> bool:
    return ROLE_RANK[role] >= ROLE_RANK[minimum]


class ClinicKind(models.TextChoices):
    CLINIC = "clinic", "Clinic"
    HOSPITAL = "hospital", "Referral hospital"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("email is required")
        user = self.model(email=normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **extra)


def normalize_email(email: str) -> str:
    return email.strip().lower()


class User(AbstractBaseUser):
    """A person. Logs in with an email address; belongs to clinics through memberships."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(max_length=254, unique=True)
    full_name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    is_superuser = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        constraints = [models.UniqueConstraint(Lower("email"), name="user_email_ci_unique")]

    def __str__(self) -> str:
        return self.email


class Clinic(models.Model):
    """A tenant: a veterinary clinic, or a referral hospital that receives consults."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    kind = models.CharField(max_length=16, choices=ClinicKind.choices, default=ClinicKind.CLINIC)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2")
    timezone = models.CharField(max_length=64, default="UTC")
    seat_limit = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=ClinicKind.values), name="clinic_kind_valid"),
            models.CheckConstraint(condition=models.Q(seat_limit__gte=1), name="clinic_seat_limit_positive"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A person's seat in a clinic. Active memberships never exceed the clinic's seat limit."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=now)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clinic", "user"], name="membership_one_per_user_clinic"),
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="membership_role_valid"),
        ]
        indexes = [models.Index(fields=["clinic", "-created_at"], name="membership_clinic_created")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.clinic_id} as {self.role}"


class Invitation(models.Model):
    """An emailed, single-use token that grants a role in a clinic to whoever presents it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=16, choices=Role.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                "clinic",
                Lower("email"),
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="invitation_one_open_per_email",
            ),
            models.CheckConstraint(condition=~models.Q(role="owner"), name="invitation_role_not_owner"),
        ]
        indexes = [models.Index(fields=["clinic", "-created_at"], name="invitation_clinic_created")]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.clinic_id} as {self.role}"

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            # Expired invitations are closed (revoked_at set) when the email is invited again.
            return "expired" if self.revoked_at >= self.expires_at else "revoked"
        if self.expires_at <= now():
            return "expired"
        return "pending"


class ApiKey(models.Model):
    """A credential for a system (PACS bridge, partner hospital), bound to one clinic and a role.

    The full key is shown once at creation; only its SHA-256 is stored. DRF sees the
    key itself as the request's principal, hence ``is_authenticated``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    role = models.CharField(max_length=16, choices=Role.choices)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~models.Q(role="owner"), name="api_key_role_not_owner"),
        ]
        indexes = [models.Index(fields=["clinic", "-created_at"], name="api_key_clinic_created")]

    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"


class AuditEntry(models.Model):
    """Who did what to which object, in which clinic, from where."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="audit_entries")
    created_at = models.DateTimeField(default=now)
    action = models.CharField(max_length=64)
    actor_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=254, blank=True, help_text="Email or key name at the time")
    target_type = models.CharField(max_length=32)
    target_id = models.UUIDField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=400, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["clinic", "-created_at"], name="audit_clinic_created"),
            models.Index(fields=["clinic", "action", "-created_at"], name="audit_clinic_action"),
        ]

    def __str__(self) -> str:
        return f"{self.action} on {self.target_type} {self.target_id} by {self.actor_label}"


class IdempotencyRecord(models.Model):
    """The first response to a create sent with an ``Idempotency-Key``, replayed to retries.

    Scoped to the clinic and the principal that sent the key; ``fingerprint`` is a hash of the
    request (method, path, query and body, uploaded files by their SHA-256), so reusing a key for a
    different request is detected. Records older than ``IDEMPOTENCY_TTL_HOURS`` are purged.
    """

    id = models.BigAutoField(primary_key=True)
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="+")
    principal = models.CharField(max_length=80, help_text="user:<id> or api-key:<id>")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(default=now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clinic", "principal", "key"], name="idempotency_key_unique"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"idempotency {self.key} ({self.response_status})"
