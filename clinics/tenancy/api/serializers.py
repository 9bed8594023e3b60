"""Input and output serializers of the tenancy API. Ids are UUIDs; nothing sequential leaks."""

from __future__ import annotations

import zoneinfo
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from clinics.tenancy.models import ApiKey, AuditEntry, Clinic, ClinicKind, Invitation, Membership, Role, User
from clinics.tenancy.selectors import clinic_seats
from xcaliber.lib.serializers import ModelSerializer

_TIMEZONES = zoneinfo.available_timezones()


def validate_timezone_name(value: str) -> None:
    if value not in _TIMEZONES:
        raise serializers.ValidationError(f"{value!r} is not an IANA time zone name (e.g. Europe/Paris).")


def validate_country(value: str) -> None:
    """Shape only; services store the code upper-cased."""
    if value and not (len(value) == 2 and value.isascii() and value.isalpha()):
        raise serializers.ValidationError("Give an ISO 3166-1 alpha-2 code, e.g. KR or US.")


# ---------------------------------------------------------------------------- outputs


class UserOutputSerializer(ModelSerializer[User]):
    class Meta:
        model = User
        fields = ("id", "email", "full_name", "created_at")
        read_only_fields = fields


class ClinicOutputSerializer(ModelSerializer[Clinic]):
    class Meta:
        model = Clinic
        fields: tuple[str, ...] = (
            "id",
            "name",
            "slug",
            "kind",
            "country",
            "timezone",
            "seat_limit",
            "created_at",
        )
        read_only_fields: tuple[str, ...] = fields


class ClinicSeatsOutputSerializer(serializers.Serializer[Any]):
    limit = serializers.IntegerField()
    active_members = serializers.IntegerField()
    pending_invitations = serializers.IntegerField()
    available = serializers.IntegerField()


class ClinicDetailOutputSerializer(ClinicOutputSerializer):
    seats = serializers.SerializerMethodField()

    @extend_schema_field(ClinicSeatsOutputSerializer)
    def get_seats(self, clinic: Clinic) -> dict[str, Any]:
        return dict(ClinicSeatsOutputSerializer(clinic_seats(clinic=clinic)).data)

    class Meta(ClinicOutputSerializer.Meta):
        fields = (*ClinicOutputSerializer.Meta.fields, "seats")
        read_only_fields = fields


class MembershipOutputSerializer(ModelSerializer[Membership]):
    user = UserOutputSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ("id", "user", "role", "is_active", "created_at", "deactivated_at")
        read_only_fields = fields


class MyMembershipOutputSerializer(ModelSerializer[Membership]):
    clinic = ClinicOutputSerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ("id", "clinic", "role", "created_at")
        read_only_fields = fields


class InvitationOutputSerializer(ModelSerializer[Invitation]):
    status = serializers.ChoiceField(choices=["pending", "accepted", "revoked", "expired"], read_only=True)
    invited_by = serializers.EmailField(
        source="invited_by.email", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Invitation
        fields: tuple[str, ...] = (
            "id",
            "email",
            "role",
            "status",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        )
        read_only_fields: tuple[str, ...] = fields


class InvitationCreatedOutputSerializer(InvitationOutputSerializer):
    token = serializers.CharField(read_only=True, help_text="Shown once; also sent by email.")

    class Meta(InvitationOutputSerializer.Meta):
        fields = (*InvitationOutputSerializer.Meta.fields, "token")
        read_only_fields = fields


class ApiKeyOutputSerializer(ModelSerializer[ApiKey]):
    created_by = serializers.EmailField(
        source="created_by.email", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = ApiKey
        fields: tuple[str, ...] = (
            "id",
            "name",
            "prefix",
            "role",
            "created_by",
            "created_at",
            "last_used_at",
            "revoked_at",
        )
        read_only_fields: tuple[str, ...] = fields


class ApiKeyCreatedOutputSerializer(ApiKeyOutputSerializer):
    key = serializers.CharField(read_only=True, help_text="The full key. Shown once: store it now.")

    class Meta(ApiKeyOutputSerializer.Meta):
        fields = (*ApiKeyOutputSerializer.Meta.fields, "key")
        read_only_fields = fields


class AuditEntryOutputSerializer(ModelSerializer[AuditEntry]):
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = AuditEntry
        fields = (
            "id",
            "created_at",
            "action",
            "actor",
            "actor_user_id",
            "actor_api_key_id",
            "target_type",
            "target_id",
            "ip",
            "user_agent",
            "data",
        )
        read_only_fields = fields


class TokenPairOutputSerializer(serializers.Serializer[Any]):
    access = serializers.CharField()
    refresh = serializers.CharField()
    access_expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class RegistrationOutputSerializer(serializers.Serializer[Any]):
    clinic = ClinicOutputSerializer()
    user = UserOutputSerializer()
    membership_id = serializers.UUIDField()
    role = serializers.ChoiceField(choices=Role.choices)
    tokens = TokenPairOutputSerializer()


class MeOutputSerializer(serializers.Serializer[Any]):
    user = UserOutputSerializer()
    memberships = MyMembershipOutputSerializer(many=True)


class AcceptedInvitationOutputSerializer(serializers.Serializer[Any]):
    membership = MyMembershipOutputSerializer()
    tokens = TokenPairOutputSerializer()


# ---------------------------------------------------------------------------- inputs


class RegisterInputSerializer(serializers.Serializer[Any]):
    clinic_name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=ClinicKind.choices, default=ClinicKind.CLINIC)
    country = serializers.CharField(
        max_length=2, required=False, default="", allow_blank=True, validators=[validate_country]
    )
    timezone = serializers.CharField(max_length=64, default="UTC", validators=[validate_timezone_name])
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
    full_name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class LoginInputSerializer(serializers.Serializer[Any]):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)


class RefreshInputSerializer(serializers.Serializer[Any]):
    refresh = serializers.CharField()


class LogoutInputSerializer(serializers.Serializer[Any]):
    refresh = serializers.CharField()
    everywhere = serializers.BooleanField(default=False, help_text="Also revoke every other refresh token.")


class PasswordChangeInputSerializer(serializers.Serializer[Any]):
    current_password = serializers.CharField(max_length=128, trim_whitespace=False)
    new_password = serializers.CharField(max_length=128, trim_whitespace=False)


class MeUpdateInputSerializer(serializers.Serializer[Any]):
    full_name = serializers.CharField(max_length=200, allow_blank=True)


class ClinicUpdateInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200, required=False)
    country = serializers.CharField(
        max_length=2, required=False, allow_blank=True, validators=[validate_country]
    )
    timezone = serializers.CharField(max_length=64, required=False, validators=[validate_timezone_name])


class MembershipUpdateInputSerializer(serializers.Serializer[Any]):
    role = serializers.ChoiceField(choices=Role.choices)


class OwnershipTransferInputSerializer(serializers.Serializer[Any]):
    membership_id = serializers.UUIDField()


class InvitationCreateInputSerializer(serializers.Serializer[Any]):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationAcceptInputSerializer(serializers.Serializer[Any]):
    token = serializers.CharField(max_length=200)
    password = serializers.CharField(
        max_length=128,
        required=False,
        trim_whitespace=False,
        help_text="Needed unless you send an access token: an existing account's "
        "password, or the new account's.",
    )
    full_name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class ApiKeyCreateInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    role = serializers.ChoiceField(choices=[c for c in Role.choices if c[0] != Role.OWNER], default=Role.VET)


class MembershipFilterSerializer(serializers.Serializer[Any]):
    role = serializers.ChoiceField(choices=Role.choices, required=False)
    is_active = serializers.BooleanField(required=False, allow_null=True, default=None)


class InvitationFilterSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=["pending", "accepted", "revoked", "expired"], required=False)


class ApiKeyFilterSerializer(serializers.Serializer[Any]):
    include_revoked = serializers.BooleanField(required=False, default=False)


class AuditFilterSerializer(serializers.Serializer[Any]):
    action = serializers.CharField(
        required=False,
        max_length=64,
        help_text="An action (`membership.role_changed`) or a family (`membership`).",
    )
    target_type = serializers.CharField(required=False, max_length=32)
    target_id = serializers.UUIDField(required=False)
    actor_user_id = serializers.UUIDField(required=False)
    actor_api_key_id = serializers.UUIDField(required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
