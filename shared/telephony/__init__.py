"""Telephony providers: placing calls, looking them up, and verifying their callbacks."""
