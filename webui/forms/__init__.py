"""Forms shared by the pages and the API: one validation of every field, server side."""
