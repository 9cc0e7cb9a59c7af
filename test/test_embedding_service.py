"""The seed's contract for EmbeddingService, verbatim from the phase-02 plan.

`TestBatchGenerateEmbeddings` and `TestBatchPerformanceBenchmarks` are copied
unchanged from ../shared/spec/000_07c1dadb00357d7e.txt (Tasks 1 and 5). They mock
`core.embedding_service.OpenAI`, so they pin the names, arguments, result keys,
error types and messages and the request packing. Deeper behaviour (limits,
retries, pacing, alignment, real HTTP) is tested in unit/test_engine_*.py,
unit/test_packing_*.py, unit/test_retry.py and integration/test_embedding_http.py.
"""

import time
from unittest.mock import MagicMock, patch

import pytest

from core.embedding_service import EmbeddingService


class TestBatchGenerateEmbeddings:
    """Test new batch embedding generation with 2048-item batches."""

    @patch('core.embedding_service.OpenAI')
    def test_batch_generate_embeddings_success_2048(self, mock_openai):
        """Test successful batch embedding with 2048 items (OpenAI's limit)."""
        # Create mock response for 2048 embeddings
        mock_embedding = [0.1] * 1536
        mock_response = MagicMock()

        # Simulate 2048 embeddings in response
        mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(2048)]
        mock_response.usage = MagicMock(prompt_tokens=100000)

        mock_client = MagicMock()
        mock_client.embeddings.create.return_value = mock_response
        mock_openai.return_value = mock_client

        service = EmbeddingService(api_key="test-key")

        # Generate 2048 embeddings
        texts = [f"text{i}" for i in range(2048)]
        result = service.batch_generate_embeddings(texts)

        # Verify structure
        assert 'embeddings' in result
        assert 'failed_indices' in result
        assert 'total_tokens' in result

        # Verify all embeddings generated
        assert len(result['embeddings']) == 2048
        assert len(result['failed_indices']) == 0
        assert result['total_tokens'] == 100000

        # Verify single API call made (2048 items fit in one batch)
        assert mock_client.embeddings.create.call_count == 1

    @patch('core.embedding_service.OpenAI')
    def test_batch_generate_embeddings_chunking(self, mock_openai):
        """Test automatic chunking for datasets larger than batch size."""
        mock_embedding = [0.1] * 1536

        mock_client = MagicMock()

        # Create responses for multiple chunks
        def mock_create(**kwargs):
            batch_size = len(kwargs['input'])
            mock_response = MagicMock()
            mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(batch_size)]
            mock_response.usage = MagicMock(prompt_tokens=batch_size * 10)
            return mock_response

        mock_client.embeddings.create.side_effect = mock_create
        mock_openai.return_value = mock_client

        service = EmbeddingService(api_key="test-key")

        # Generate 5000 embeddings (should chunk into 3 batches: 2048 + 2048 + 904)
        texts = [f"text{i}" for i in range(5000)]
        result = service.batch_generate_embeddings(texts)

        # Verify all embeddings generated
        assert len(result['embeddings']) == 5000
        assert len(result['failed_indices']) == 0

        # Verify 3 API calls made (chunking)
        assert mock_client.embeddings.create.call_count == 3

    @patch('core.embedding_service.OpenAI')
    def test_batch_generate_embeddings_partial_failure(self, mock_openai):
        """Test graceful failure with partial results."""
        mock_embedding = [0.1] * 1536

        mock_client = MagicMock()

        # First call succeeds, second call fails, third call succeeds
        call_count = [0]

        def mock_create_with_failure(**kwargs):
            call_count[0] += 1
            if call_count[0] == 2:
                # Second batch fails
                raise Exception("API rate limit exceeded")

            batch_size = len(kwargs['input'])
            mock_response = MagicMock()
            mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(batch_size)]
            mock_response.usage = MagicMock(prompt_tokens=batch_size * 10)
            return mock_response

        mock_client.embeddings.create.side_effect = mock_create_with_failure
        mock_openai.return_value = mock_client

        service = EmbeddingService(api_key="test-key")

        # Generate 3000 embeddings (3 batches, middle one fails)
        texts = [f"text{i}" for i in range(3000)]
        result = service.batch_generate_embeddings(texts)

        # Verify partial results: first 2048 + last 952 = 3000
        # Actually middle batch fails, so we get first 2048 + last 952
        assert len(result['embeddings']) > 0  # Some succeeded
        assert len(result['embeddings']) < 3000  # Not all succeeded

        # Failed indices should be recorded
        assert len(result['failed_indices']) > 0
        assert all(isinstance(idx, int) for idx in result['failed_indices'])

        # At least some embeddings succeeded
        assert len(result['embeddings']) + len(result['failed_indices']) >= 3000

    @patch('core.embedding_service.OpenAI')
    def test_batch_generate_embeddings_empty_list(self, mock_openai):
        """Test batch generation rejects empty list."""
        mock_openai.return_value = MagicMock()

        service = EmbeddingService(api_key="test-key")

        with pytest.raises(ValueError, match="empty list"):
            service.batch_generate_embeddings([])

    @patch('core.embedding_service.OpenAI')
    def test_batch_generate_embeddings_empty_text(self, mock_openai):
        """Test batch generation rejects empty strings."""
        mock_openai.return_value = MagicMock()

        service = EmbeddingService(api_key="test-key")

        with pytest.raises(ValueError, match="empty"):
            service.batch_generate_embeddings(["text1", "", "text3"])

    @patch('core.embedding_service.OpenAI')
    def test_batch_generate_embeddings_all_fail(self, mock_openai):
        """Test complete failure raises error."""
        mock_client = MagicMock()
        mock_client.embeddings.create.side_effect = Exception("All API calls failed")
        mock_openai.return_value = mock_client

        service = EmbeddingService(api_key="test-key")

        with pytest.raises(RuntimeError, match="Failed to generate any embeddings"):
            service.batch_generate_embeddings(["text1", "text2"])

    @patch('core.embedding_service.OpenAI')
    def test_batch_generate_embeddings_custom_batch_size(self, mock_openai):
        """Test custom batch size parameter."""
        mock_embedding = [0.1] * 1536
        mock_response = MagicMock()
        mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(100)]
        mock_response.usage = MagicMock(prompt_tokens=1000)

        mock_client = MagicMock()
        mock_client.embeddings.create.return_value = mock_response
        mock_openai.return_value = mock_client

        service = EmbeddingService(api_key="test-key")

        # Use custom batch size
        texts = [f"text{i}" for i in range(300)]
        result = service.batch_generate_embeddings(texts, max_batch_size=100)

        # Should make 3 API calls with custom batch size
        assert len(result['embeddings']) == 300
        assert mock_client.embeddings.create.call_count == 3


class TestBatchPerformanceBenchmarks:
    """Performance benchmarks for batch embedding generation."""

    @patch('core.embedding_service.OpenAI')
    def test_batch_vs_individual_performance(self, mock_openai):
        """Benchmark: batch generation is significantly faster than individual."""
        import time

        # Setup mock
        mock_embedding = [0.1] * 1536

        mock_client = MagicMock()

        def mock_create_with_delay(**kwargs):
            # Simulate API latency (1ms per call regardless of batch size)
            time.sleep(0.001)
            batch_size = len(kwargs['input'])
            mock_response = MagicMock()
            mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(batch_size)]
            mock_response.usage = MagicMock(prompt_tokens=batch_size * 10)
            return mock_response

        mock_client.embeddings.create.side_effect = mock_create_with_delay
        mock_openai.return_value = mock_client

        from core.embedding_service import EmbeddingService
        service = EmbeddingService(api_key="test-key")

        # Benchmark individual generation (100 items)
        texts = [f"text{i}" for i in range(100)]

        start_individual = time.time()
        individual_results = []
        for text in texts:
            result = service.generate_embedding(text)
            individual_results.append(result)
        time_individual = time.time() - start_individual

        # Benchmark batch generation (100 items)
        start_batch = time.time()
        batch_result = service.batch_generate_embeddings(texts)
        time_batch = time.time() - start_batch

        # Batch should be significantly faster (at least 10x with mocked latency)
        speedup = time_individual / time_batch
        print(f"\\nPerformance: {speedup:.1f}x speedup (batch vs individual)")
        print(f"Individual: {time_individual:.3f}s, Batch: {time_batch:.3f}s")

        # Assert reasonable speedup (at least 5x with mocked latency)
        assert speedup >= 5, f"Batch should be at least 5x faster, got {speedup:.1f}x"

    @patch('core.embedding_service.OpenAI')
    def test_large_dataset_performance(self, mock_openai):
        """Benchmark: process 1000 sections efficiently."""
        import time

        mock_embedding = [0.1] * 1536

        mock_client = MagicMock()
        mock_response = MagicMock()
        mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(1000)]
        mock_response.usage = MagicMock(prompt_tokens=10000)
        mock_client.embeddings.create.return_value = mock_response
        mock_openai.return_value = mock_client

        from core.embedding_service import EmbeddingService
        service = EmbeddingService(api_key="test-key")

        # Process 1000 embeddings
        texts = [f"section content {i}" for i in range(1000)]

        start = time.time()
        result = service.batch_generate_embeddings(texts)
        elapsed = time.time() - start

        # Verify all succeeded
        assert len(result['embeddings']) == 1000
        assert len(result['failed_indices']) == 0

        print(f"\\n1000 embeddings processed in {elapsed:.3f}s")
        print(f"API calls made: {mock_client.embeddings.create.call_count}")

        # Should be single API call (1000 < 2048)
        assert mock_client.embeddings.create.call_count == 1

    @patch('core.embedding_service.OpenAI')
    def test_2048_batch_limit(self, mock_openai):
        """Benchmark: verify 2048 is the optimal batch size."""
        mock_embedding = [0.1] * 1536

        mock_client = MagicMock()
        mock_response = MagicMock()

        def mock_create(**kwargs):
            batch_size = len(kwargs['input'])
            mock_response = MagicMock()
            mock_response.data = [MagicMock(embedding=mock_embedding) for _ in range(batch_size)]
            mock_response.usage = MagicMock(prompt_tokens=batch_size * 10)
            return mock_response

        mock_client.embeddings.create.side_effect = mock_create
        mock_openai.return_value = mock_client

        from core.embedding_service import EmbeddingService
        service = EmbeddingService(api_key="test-key")

        # Test exactly 2048 items
        texts = [f"text{i}" for i in range(2048)]
        result = service.batch_generate_embeddings(texts)

        assert len(result['embeddings']) == 2048
        assert len(result['failed_indices']) == 0
        assert mock_client.embeddings.create.call_count == 1  # Single call

        # Test 2049 items (should chunk into 2 calls)
        mock_client.embeddings.create.reset_mock()
        texts = [f"text{i}" for i in range(2049)]
        result = service.batch_generate_embeddings(texts)

        assert len(result['embeddings']) == 2049
        assert mock_client.embeddings.create.call_count == 2  # Two calls
