"""The example orders/payments API that ``python3 dev.py demo`` runs."""
