from __future__ import annotations

from django.urls import path

from tests.testapp import encoding_views

urlpatterns = [
    path("plain/", encoding_views.encoded_plain),
    path("decorated/", encoding_views.encoded_decorated),
    path("async/", encoding_views.encoded_async),
    path("gzip-page/", encoding_views.encoded_gzip_page),
    path("drf/", encoding_views.EncodedDRFView.as_view()),
]
