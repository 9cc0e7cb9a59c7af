"""The seed's contract for SupabaseStore.batch_ingest_embeddings (phase-02 plan, Task 3).

`test_batch_ingest_embeddings_empty_list` and `..._large_dataset` are verbatim.
`..._success` and `..._partial_failure` keep the seed's setup but correct
expectations that contradict themselves; each docstring says why. Store
behaviour beyond the seed is in unit/test_supabase_store_rows.py (mocked client) and
unit/test_supabase_http.py (the real supabase-py client against respx).
"""

from unittest.mock import MagicMock, patch


class TestBatchIngestEmbeddings:
    """Test batch embedding ingestion integration."""

    @patch('core.supabase_store.datetime')
    @patch('core.embedding_service.OpenAI')
    def test_batch_ingest_embeddings_success(self, mock_openai, mock_datetime, mock_supabase_store):
        """Test successful batch ingestion.

        Corrected from the seed. Its setup line
        `client.table().upsert().execute.return_value = MagicMock()` itself calls
        `upsert()` once (with no row), so a correct row-by-row store leaves
        `upsert.call_count == 11`, not 10. The seed's intent is "one upsert per
        section": count the calls that carried a row, and check each carried its
        own section, the conflict target and `returning="minimal"`.
        """
        # Setup embedding service mock
        mock_embedding = [0.1] * 1536
        mock_response = MagicMock()
        mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(10)]
        mock_response.usage = MagicMock(prompt_tokens=100)

        mock_client = MagicMock()
        mock_client.embeddings.create.return_value = mock_response
        mock_openai.return_value = mock_client

        from core.embedding_service import EmbeddingService
        embedding_service = EmbeddingService(api_key="test-key")

        # Setup sections
        sections = [
            {'id': i, 'title': f'Section {i}', 'content': f'Content {i}'}
            for i in range(1, 11)
        ]

        # Mock Supabase upsert
        mock_supabase_store.client.table().upsert().execute.return_value = MagicMock()
        mock_datetime.now.return_value.isoformat.return_value = "2026-02-08T00:00:00"

        # Ingest embeddings
        result = mock_supabase_store.batch_ingest_embeddings(
            sections, embedding_service, batch_size=2048
        )

        # Verify result structure
        assert 'success_count' in result
        assert 'failed_count' in result
        assert 'total_tokens' in result
        assert 'failed_ids' in result

        # Verify all succeeded
        assert result['success_count'] == 10
        assert result['failed_count'] == 0
        assert result['total_tokens'] == 100
        assert len(result['failed_ids']) == 0

        # One upsert per section: the calls that carried a row (the setup line's bare
        # `upsert()` carried none).
        upsert = mock_supabase_store.client.table().upsert
        row_calls = [c for c in upsert.call_args_list if c.args]
        assert upsert.call_count == len(row_calls) + 1
        assert len(row_calls) == 10
        assert sorted(c.args[0]['section_id'] for c in row_calls) == list(range(1, 11))
        for c in row_calls:
            assert c.kwargs == {'on_conflict': 'section_id', 'returning': 'minimal'}
            assert c.args[0]['updated_at'] == "2026-02-08T00:00:00"
            assert c.args[0]['model'] == "text-embedding-3-small"

    @patch('core.supabase_store.datetime')
    @patch('core.embedding_service.OpenAI')
    def test_batch_ingest_embeddings_empty_list(self, mock_openai, mock_datetime, mock_supabase_store):
        """Test batch ingestion with empty section list."""
        mock_openai.return_value = MagicMock()

        from core.embedding_service import EmbeddingService
        embedding_service = EmbeddingService(api_key="test-key")

        result = mock_supabase_store.batch_ingest_embeddings(
            [], embedding_service
        )

        # Should return empty result without errors
        assert result['success_count'] == 0
        assert result['failed_count'] == 0
        assert result['total_tokens'] == 0
        assert result['failed_ids'] == []

    @patch('core.supabase_store.datetime')
    @patch('core.embedding_service.OpenAI')
    def test_batch_ingest_embeddings_partial_failure(self, mock_openai, mock_datetime, mock_supabase_store):
        """Test batch ingestion with some failures.

        Corrected from the seed, same setup. The seed expected 8 stored, 2 failed:
        impossible. The API answers 8 vectors for 10 inputs, so at most 8 rows
        could be written and rows 3 and 7 fail on top of that: at most 6. Worse,
        with 8 vectors for 10 texts nothing says which text each vector belongs
        to; storing them in order would put vectors under the wrong sections.
        Honest accounting: the short response is refused (retried, and still
        short), so all 10 sections fail with that reason and no row is written.
        `test_store_failures_fail_only_their_rows` covers the seed's other intent
        (rows 3 and 7 failing at the database while the rest are stored).
        """
        # Setup embedding service to return partial results
        mock_embedding = [0.1] * 1536

        mock_client = MagicMock()
        mock_response = MagicMock()
        # Return only 8 embeddings (2 failed)
        mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(8)]
        mock_response.usage = MagicMock(prompt_tokens=80)
        mock_client.embeddings.create.return_value = mock_response
        mock_openai.return_value = mock_client

        from core.embedding_service import EmbeddingService
        embedding_service = EmbeddingService(api_key="test-key")

        sections = [
            {'id': i, 'title': f'Section {i}', 'content': f'Content {i}'}
            for i in range(1, 11)
        ]

        # Mock upsert that fails for some sections
        def mock_upsert_side_effect(data, **kwargs):
            # Fail for section IDs 3 and 7
            if data['section_id'] in [3, 7]:
                raise Exception("Database error")
            return MagicMock(execute=MagicMock())

        mock_supabase_store.client.table().upsert.side_effect = mock_upsert_side_effect
        mock_datetime.now.return_value.isoformat.return_value = "2026-02-08T00:00:00"

        result = mock_supabase_store.batch_ingest_embeddings(
            sections, embedding_service
        )

        # Nothing can be stored honestly; every section is accounted for.
        assert result['success_count'] == 0
        assert result['failed_count'] == 10
        assert result['success_count'] + result['failed_count'] + result['skipped_count'] == 10
        assert result['failed_ids'] == list(range(1, 11))
        assert all("8 vectors for 10 inputs" in f['reason'] for f in result['failures'])
        # The short answer was retried before giving up, and no row went out.
        assert mock_client.embeddings.create.call_count == 1 + embedding_service.max_retries
        assert not [c for c in mock_supabase_store.client.table().upsert.call_args_list if c.args]

    @patch('core.supabase_store.datetime')
    @patch('core.embedding_service.OpenAI')
    def test_store_failures_fail_only_their_rows(self, mock_openai, mock_datetime, mock_supabase_store):
        """The seed's partial-failure intent, made consistent: all 10 vectors come
        back, rows 3 and 7 fail at the database, the other 8 are stored."""
        mock_response = MagicMock()
        mock_response.data = [MagicMock(embedding=[0.1] * 1536) for _ in range(10)]
        mock_response.usage = MagicMock(prompt_tokens=100)
        mock_client = MagicMock()
        mock_client.embeddings.create.return_value = mock_response
        mock_openai.return_value = mock_client

        from core.embedding_service import EmbeddingService
        embedding_service = EmbeddingService(api_key="test-key")
        sections = [{'id': i, 'title': f'Section {i}', 'content': f'Content {i}'} for i in range(1, 11)]

        def mock_upsert_side_effect(data, **kwargs):
            if data['section_id'] in [3, 7]:
                raise Exception("Database error")
            return MagicMock(execute=MagicMock())

        mock_supabase_store.client.table().upsert.side_effect = mock_upsert_side_effect
        mock_datetime.now.return_value.isoformat.return_value = "2026-02-08T00:00:00"

        result = mock_supabase_store.batch_ingest_embeddings(sections, embedding_service)

        assert result['success_count'] == 8
        assert result['failed_count'] == 2
        assert result['failed_ids'] == [3, 7]
        assert [f['reason'] for f in result['failures']] == ["store failed: Exception: Database error"] * 2
        assert result['total_tokens'] == 100

    @patch('core.supabase_store.datetime')
    @patch('core.embedding_service.OpenAI')
    def test_batch_ingest_embeddings_large_dataset(self, mock_openai, mock_datetime, mock_supabase_store):
        """Test batch ingestion with 1000+ sections."""
        # Mock large batch response
        mock_embedding = [0.1] * 1536

        mock_client = MagicMock()
        mock_response = MagicMock()
        mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(1000)]
        mock_response.usage = MagicMock(prompt_tokens=10000)
        mock_client.embeddings.create.return_value = mock_response
        mock_openai.return_value = mock_client

        from core.embedding_service import EmbeddingService
        embedding_service = EmbeddingService(api_key="test-key")

        sections = [
            {'id': i, 'title': f'Section {i}', 'content': f'Content {i}'}
            for i in range(1, 1001)
        ]

        mock_supabase_store.client.table().upsert().execute.return_value = MagicMock()
        mock_datetime.now.return_value.isoformat.return_value = "2026-02-08T00:00:00"

        result = mock_supabase_store.batch_ingest_embeddings(
            sections, embedding_service, batch_size=2048
        )

        # All 1000 should succeed
        assert result['success_count'] == 1000
        assert result['failed_count'] == 0
        assert result['total_tokens'] == 10000

        # Verify single API call (1000 < 2048)
        assert mock_client.embeddings.create.call_count == 1
