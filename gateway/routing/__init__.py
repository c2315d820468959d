"""Which version answers, following the state database: the catalog of versions and aliases
this process serves and how a selector resolves in it, the reconciler that warms and swaps
them blue-green, and the canary split with its guard, shadows and traffic report."""
