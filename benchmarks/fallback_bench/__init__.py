"""The example project plus a Server-Sent Events stream, for fallback_delivery.py only."""
