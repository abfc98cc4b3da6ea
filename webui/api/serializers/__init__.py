"""How the API shows things and what it accepts: one module per resource, on the strict base of ``base``."""
