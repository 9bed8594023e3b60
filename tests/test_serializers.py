"""Every ModelSerializer of the project builds its fields once per class, and gets the same fields as DRF."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.urls import get_resolver
from rest_framework import serializers

from clinics.records.api.serializers import ImageOutputSerializer, PatientSummarySerializer
from clinics.records.models import Image
from tests.conftest import Cast
from tests.records.factories import make_image, make_study
from xcaliber.lib.serializers import ModelSerializer, _per_thread, represent


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def project_model_serializers() -> list[type[Any]]:
    get_resolver().url_patterns  # imports every view, and with them every serializer  # noqa: B018
    return sorted(
        {
            cls
            for cls in _all_subclasses(serializers.ModelSerializer)
            if cls.__module__.split(".")[0] in {"clinics", "billing", "inference", "referrals", "xcaliber"}
            and cls is not ModelSerializer
        },
        key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
    )


def test_every_model_serializer_of_the_project_builds_its_fields_once() -> None:
    classes = project_model_serializers()
    assert len(classes) >= 20
    assert [cls for cls in classes if not issubclass(cls, ModelSerializer)] == []


@pytest.mark.parametrize("cls", project_model_serializers(), ids=lambda cls: cls.__qualname__)
def test_the_fields_are_drfs_own_and_no_two_instances_share_one(cls: type[Any]) -> None:
    first, second = cls(), cls()
    drfs_own = serializers.ModelSerializer.get_fields(cls())  # the model read again, as DRF does
    assert {name: repr(field) for name, field in first.fields.items()} == {
        name: repr(field) for name, field in drfs_own.items()
    }
    assert list(first.fields) == list(drfs_own)
    shared = {id(field) for field in first.fields.values()} & {id(field) for field in second.fields.values()}
    assert shared == set()
    assert all(field.parent is first for field in first.fields.values())


def test_the_model_is_read_once_per_class(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fresh(ModelSerializer[Image]):
        class Meta:
            model = Image
            fields = ("id", "study", "digest", "width")

    calls = []
    drf_get_fields = serializers.ModelSerializer.get_fields

    def counted(self: Any) -> dict[str, Any]:
        calls.append(type(self))
        return drf_get_fields(self)

    monkeypatch.setattr(serializers.ModelSerializer, "get_fields", counted)
    made = [Fresh() for _ in range(5)]
    assert [list(one.fields) for one in made] == [["id", "study", "digest", "width"]] * 5
    assert calls == [Fresh]
    made[0].fields["width"].label = "changed"  # one instance's field is its own
    assert made[1].fields["width"].label != "changed"


@pytest.mark.django_db
def test_represent_gives_data_from_one_serializer_per_class_and_thread(cast: Cast) -> None:
    study = make_study(cast.clinic)
    images = [make_image(study, seed=seed) for seed in range(2)] + [
        make_image(study, seed=9, with_previews=False)
    ]
    for image in images:  # links differ with the preview's status: nothing kept from the last one
        assert represent(ImageOutputSerializer, image) == dict(ImageOutputSerializer(image).data)
    assert represent(PatientSummarySerializer, study.patient) == dict(
        PatientSummarySerializer(study.patient).data
    )
    kept = _per_thread.serializers
    assert set(kept) == {ImageOutputSerializer, PatientSummarySerializer}
    first = kept[ImageOutputSerializer]
    represent(ImageOutputSerializer, images[0])
    assert _per_thread.serializers[ImageOutputSerializer] is first
    elsewhere: list[Any] = []

    def other_thread() -> None:
        represent(ImageOutputSerializer, images[0])
        elsewhere.append(_per_thread.serializers[ImageOutputSerializer])

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert elsewhere
    assert elsewhere[0] is not first
