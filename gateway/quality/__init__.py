"""Ground truth and live quality: answers kept for their labels, ``POST /feedback``, and the
quality of each version and arm computed at an interval (docs/user-guide.md, "Labels and live
quality")."""
