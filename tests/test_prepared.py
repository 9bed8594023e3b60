"""Prepared queries and inserts (xcaliber.lib.prepared) give what the ORM gives, compiled once.

They run on the suite's database, so the SQLite run and the PostgreSQL run (CI) both check them.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Model
from django.db.models.sql.compiler import SQLCompiler
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from billing.models import Subscription
from clinics.records.models import Image, Study
from clinics.tenancy.models import ApiKey, Clinic
from clinics.tenancy.services import api_key_create
from inference.models import ModelVersion, ModelVersionStatus
from tests.conftest import Cast
from tests.records.factories import make_image, make_study
from xcaliber.lib.prepared import PreparedInsert, PreparedQuery, field_param

pytestmark = pytest.mark.django_db(transaction=True)


def row(obj: Model) -> dict[str, Any]:
    """Every loaded column of ``obj``, as the instance holds it (types included)."""
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def key_by_prefix() -> PreparedQuery[ApiKey]:
    return PreparedQuery(
        lambda: (
            ApiKey.objects.select_related("clinic")
            .filter(prefix=field_param(ApiKey, "prefix"))
            .order_by("pk")[:1]
        )
    )


def study_locked() -> PreparedQuery[Study]:
    return PreparedQuery(
        lambda: (
            Study.objects.select_for_update(of=("self",))
            .select_related("patient")
            .filter(
                clinic_id=field_param(Study, "clinic_id"),
                dicom_study_uid=field_param(Study, "dicom_study_uid"),
            )
            .order_by("pk")[:1]
        )
    )


def test_a_lookup_gives_the_orms_instance_and_its_related_one_each_value_its_own_row(cast: Cast) -> None:
    first = api_key_create(clinic=cast.clinic, name="bridge", role="technician").api_key
    second = api_key_create(clinic=cast.other_clinic, name="pacs", role="vet").api_key
    lookup = key_by_prefix()
    for key in (first, second):
        found = lookup.first(prefix=key.prefix)
        expected = ApiKey.objects.select_related("clinic").get(prefix=key.prefix)
        assert found is not None
        assert type(found) is ApiKey
        assert row(found) == row(expected)
        assert isinstance(found.created_at.tzinfo, type(expected.created_at.tzinfo))
        assert not found._state.adding
        assert found._state.db == "default"
        with CaptureQueriesContext(connection) as queries:
            assert row(found.clinic) == row(expected.clinic)  # loaded with it: no query
        assert len(queries) == 0
    assert lookup.first(prefix="nothing-here") is None
    assert lookup.all(prefix=first.prefix) == [first]


def test_it_is_compiled_once_and_each_run_is_one_query(cast: Cast, monkeypatch: pytest.MonkeyPatch) -> None:
    key = api_key_create(clinic=cast.clinic, name="bridge", role="technician").api_key
    lookup = key_by_prefix()
    lookup.first(prefix=key.prefix)
    compiled = []
    original = SQLCompiler.as_sql

    def counting(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        compiled.append(self.query.model)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SQLCompiler, "as_sql", counting)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert lookup.first(prefix=key.prefix) == key
    assert len(queries) == 3
    assert compiled == []
    assert all(key.prefix in query["sql"] for query in queries)  # the value each time, as a parameter
    ApiKey.objects.filter(prefix=key.prefix).first()  # the ORM, for contrast, compiles each time
    assert compiled == [ApiKey]


def test_values_are_named_and_all_of_them_are_needed(cast: Cast) -> None:
    lookup = key_by_prefix()
    with pytest.raises(TypeError, match="prefix"):
        lookup.first()
    with pytest.raises(TypeError, match="prefix"):
        lookup.first(prefix="a", clinic="b")


def test_a_reverse_one_to_one_absent_or_present_is_what_the_orm_says(cast: Cast) -> None:
    lookup = PreparedQuery(
        lambda: Clinic.objects.select_related("subscription").filter(id=field_param(Clinic, "id"))[:1]
    )
    bare = lookup.first(id=cast.clinic.id)
    assert bare is not None
    assert row(bare) == row(Clinic.objects.get(id=cast.clinic.id))
    with pytest.raises(Subscription.DoesNotExist), CaptureQueriesContext(connection) as queries:
        bare.subscription  # noqa: B018  # known absent: no query
    assert len(queries) == 0
    subscription = Subscription.objects.create(clinic=cast.other_clinic, stripe_customer_id="cus_prepared")
    paying = lookup.first(id=cast.other_clinic.id)
    assert paying is not None
    assert row(paying.subscription) == row(subscription)


def test_deferred_fields_and_json_columns_load_as_the_orm_loads_them(db: None) -> None:
    lookup = PreparedQuery(
        lambda: (
            ModelVersion.objects.filter(status=ModelVersionStatus.ACTIVE)
            .defer("card", "metrics")
            .order_by("-activated_at")
        )
    )
    found = lookup.all()
    expected = list(ModelVersion.objects.filter(status=ModelVersionStatus.ACTIVE).order_by("-activated_at"))
    assert found
    assert [v.id for v in found] == [v.id for v in expected]
    version, full = found[0], expected[0]
    assert version.get_deferred_fields() == {"card", "metrics"}
    assert isinstance(version.species, list)
    assert version.species == full.species
    assert version.thresholds == full.thresholds
    with CaptureQueriesContext(connection) as queries:
        assert version.card == full.card  # loaded when asked for, one query
    assert len(queries) == 1


def test_a_clinic_value_keeps_to_its_clinic(cast: Cast) -> None:
    mine = make_study(cast.clinic, dicom_study_uid="1.2.826.0.1.3680043.1")
    make_study(cast.other_clinic, dicom_study_uid="1.2.826.0.1.3680043.2")
    lookup = study_locked()
    with transaction.atomic():
        found = lookup.first(clinic_id=cast.clinic.id, dicom_study_uid=mine.dicom_study_uid)
        assert found is not None
        assert row(found) == row(mine)
        assert row(found.patient) == row(mine.patient)
        assert lookup.first(clinic_id=cast.clinic.id, dicom_study_uid="1.2.826.0.1.3680043.2") is None
        assert lookup.first(clinic_id=cast.other_clinic.id, dicom_study_uid=mine.dicom_study_uid) is None


def test_select_for_update_needs_a_transaction_where_the_database_locks_rows(cast: Cast) -> None:
    study = make_study(cast.clinic, dicom_study_uid="1.2.826.0.1.3680043.3")
    lookup = study_locked()
    values = {"clinic_id": cast.clinic.id, "dicom_study_uid": study.dicom_study_uid}
    if connection.features.has_select_for_update:
        for _ in range(2):  # refused before the compile, and after it
            with pytest.raises(TransactionManagementError):
                lookup.first(**values)
            with transaction.atomic(), CaptureQueriesContext(connection) as queries:
                assert lookup.first(**values) == study
            assert "FOR UPDATE" in queries[0]["sql"]
    else:  # SQLite: the transaction's write lock is the lock, as with the ORM
        assert lookup.first(**values) == study
        assert Study.objects.select_for_update().filter(id=study.id).first() == study


def test_a_prepared_query_refuses_what_it_cannot_keep(db: None) -> None:
    with pytest.raises(ValueError, match="model instances"):
        # A values() queryset, of dicts: refused, which is the point (and why the types disagree).
        PreparedQuery(lambda: ApiKey.objects.values("id")).all()  # type: ignore[arg-type, return-value, type-var]
    with pytest.raises(ValueError, match="prefetch_related"):
        PreparedQuery(lambda: Clinic.objects.prefetch_related("memberships")).all()


def new_image(study: Study, **fields: Any) -> Image:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "clinic_id": study.clinic_id,
        "study": study,
        "source": "png",
        "media_type": "image/png",
        "digest": "ab" * 32,
        "size_bytes": 10,
        "width": 4,
        "height": 3,
        "bits": 8,
        "dicom_metadata": {"Modality": "DX", "Rows": 3},
    }
    values.update(fields)
    values.setdefault("storage_key", f"prepared/{values['id']}.png")
    return Image(**values)


def test_an_insert_writes_the_row_that_save_would(cast: Cast) -> None:
    study = make_study(cast.clinic)
    insert = PreparedInsert(Image)
    image = new_image(study)
    assert image.created_at is None or image._state.adding
    with CaptureQueriesContext(connection) as queries:
        assert insert.insert(image) is True
    assert len(queries) == 1
    assert queries[0]["sql"].startswith("INSERT")
    assert not image._state.adding
    assert image._state.db == "default"
    assert image.created_at is not None  # pre_save: auto_now_add, as save() sets it
    stored = Image.objects.get(id=image.id)
    assert row(stored) == row(image)
    twin = new_image(study, digest="cd" * 32)  # save() for contrast: the same columns
    twin.save()
    assert set(row(Image.objects.get(id=twin.id))) == set(row(stored))


def test_a_conflict_is_skipped_and_said_and_the_transaction_goes_on(cast: Cast) -> None:
    study = make_study(cast.clinic)
    there = make_image(study, seed=1)
    insert = PreparedInsert(Image, skip_conflicts=True)
    with transaction.atomic():
        # Same bytes in the same study: the unique constraint refuses the row, quietly.
        assert insert.insert(new_image(study, digest=there.digest)) is False
        # PostgreSQL would refuse every later statement of a transaction an error aborted: not here.
        assert insert.insert(new_image(study, digest="ef" * 32)) is True
    assert sorted(Image.objects.filter(study=study).values_list("digest", flat=True)) == sorted(
        [there.digest, "ef" * 32]
    )


def test_without_skipping_a_conflict_is_the_integrity_error_and_a_key_is_needed(cast: Cast) -> None:
    study = make_study(cast.clinic)
    there = make_image(study, seed=2)
    insert = PreparedInsert(Image)
    with pytest.raises(IntegrityError), transaction.atomic():
        insert.insert(new_image(study, digest=there.digest))
    with pytest.raises(ValueError, match="primary key"):
        insert.insert(new_image(study, id=None))
    assert Image.objects.filter(study=study).count() == 1
