"""Which version answers, following the state database: the catalog of versions and aliases
this process serves, the reconciler that warms and swaps them blue-green, version selectors,
and the canary split with its guard and shadows."""
