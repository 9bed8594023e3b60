import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_register_login_me_flow(anon):
    r = anon.post(
        "/api/v1/auth/register/",
        {
            "clinic_name": "Seoul Animal Hospital",
            "email": "Boss@Example.test",
            "password": PASSWORD,
            "country": "kr",
            "timezone": "Asia/Seoul",
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["clinic"]["country"] == "KR"
    assert body["role"] == "owner"
    r = anon.post("/api/v1/auth/login/", {"email": "boss@example.test", "password": PASSWORD}, format="json")
    assert r.status_code == 200, r.content
    anon.credentials(HTTP_AUTHORIZATION="Bearer " + r.json()["access"])
    r = anon.get("/api/v1/auth/me/")
    assert r.status_code == 200
    assert r.json()["memberships"][0]["clinic"]["name"] == "Seoul Animal Hospital"
    r = anon.get("/api/v1/members/")
    assert r.status_code == 200, r.content
    assert len(r.json()["results"]) == 1
