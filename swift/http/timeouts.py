"""The HTTP layer's default timeouts, apart so that option help can name them
without loading the HTTP stack."""

#: (connect, read) timeouts in seconds. A read that stalls for this long
#: counts as a transient failure and is retried from the first missing byte.
DEFAULT_TIMEOUT = (10.0, 15.0)
