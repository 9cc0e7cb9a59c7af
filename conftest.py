"""Root fixtures shared by every test module (the seed's tests use `mock_supabase_store`)."""
