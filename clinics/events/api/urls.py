from __future__ import annotations

from django.urls import path

from clinics.events.api import views

urlpatterns = [
    path("events/", views.EventListView.as_view(), name="event-list"),
    path("events/ticket/", views.EventTicketView.as_view(), name="event-ticket"),
]
