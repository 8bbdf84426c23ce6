"""Web Push: the VAPID keys and encryption, the sender, and which events notify whom."""
