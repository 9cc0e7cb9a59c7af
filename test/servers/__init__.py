"""Test-only local servers (not shipped in the wheel): `servers.postgrest_server`, a PostgREST stand-in.

`test/` is on sys.path under pytest (test/conftest.py has no package around it),
so these import as ``servers.<module>``; the server processes get ``test/`` on
their PYTHONPATH from their handle (`ServerProcess.import_roots`).
"""
