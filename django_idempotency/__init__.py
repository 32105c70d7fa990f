"""django-idempotency: retry-safe unsafe HTTP requests for Django, with Idempotency-Key."""
