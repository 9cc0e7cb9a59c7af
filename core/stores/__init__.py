"""The stores: the ingest pipeline every store shares, PostgreSQL (psycopg) and Supabase (PostgREST)
targets, sync and async, and the schema they write to."""
