from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from tests.testapp import views

router = DefaultRouter()
router.register("orders", views.OrderViewSet)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("plain/behave/", views.plain_behave),
    path("decorated/behave/", views.decorated_behave),
    path("decorated/wait/", views.decorated_wait),
    path("decorated/shared-anonymous/", views.decorated_shared_anonymous),
    path("exempt/behave/", views.exempt_behave),
    path("form/behave/", views.form_behave),
    path("async/behave/", views.async_behave),
    path("async/decorated/behave/", views.async_decorated_behave),
    path("drf/behave/", views.DRFBehaveView.as_view()),
    path("drf/required/", views.DRFRequiredView.as_view()),
    path("drf/wait/", views.DRFWaitView.as_view()),
    path("drf/shared-anonymous/", views.DRFSharedAnonymousView.as_view()),
    path("drf-without-mixin/behave/", views.DRFWithoutMixinView.as_view()),
    path("drf-without-mixin/api-key/", views.ApiKeyWithoutMixinView.as_view()),
    path("drf/api-key/", views.ApiKeyView.as_view()),
    path("encoding/", include("tests.testapp.encoding_urls")),
]
