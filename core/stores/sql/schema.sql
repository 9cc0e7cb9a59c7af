-- Section embeddings: one row per document section (its text, metadata and vector),
-- searched by cosine similarity, optionally filtered on metadata.
--
-- Table {{table}}, {{id_type}} ids, {{dimensions}}-dimensional vectors, search function {{match_function}}().
-- Safe to run again: every statement is idempotent, and a table made by an earlier
-- version is brought up to date (new columns added, the search function replaced)
-- without losing a row. Paste into Supabase's SQL editor, or run with psql /
-- `python -m core schema --apply`.

create extension if not exists vector;

-- One row per section. content_hash + model let the ingest skip unchanged sections;
-- metadata holds every other field of the input record (JSON), for filters.
create table if not exists {{table}} (
  section_id {{id_type}} primary key,
  title text,
  content text,
  metadata jsonb not null default '{}'::jsonb,
  source text,
  embedding vector({{dimensions}}) not null,
  model text not null,
  content_hash text not null,
  token_count integer,
  updated_at timestamptz not null default now()
);

-- Tables made before content and metadata were kept: add them (existing rows get
-- an empty content and metadata; the next ingest of their sections fills them in).
alter table {{table}} add column if not exists content text;
alter table {{table}} add column if not exists metadata jsonb not null default '{}'::jsonb;
alter table {{table}} add column if not exists source text;
-- Full-text search over title and content (hybrid search). 'simple': no language's
-- stemming or stop words, so every language's exact terms match as written.
alter table {{table}} add column if not exists fts tsvector
  generated always as (to_tsvector('simple', coalesce(title, '') || ' ' || coalesce(content, ''))) stored;

-- "create table if not exists" keeps an existing table as it is: stop here if its
-- vectors have another size, rather than let every later insert fail.
do $$
begin
  if exists (
    select 1
    from pg_attribute
    where attrelid = to_regclass('{{table}}')
      and attname = 'embedding'
      and not attisdropped
      and (atttypid <> 'vector'::regtype or atttypmod <> {{dimensions}})
  ) then
    raise exception 'table {{table}} already exists and its embedding column is not vector({{dimensions}})';
  end if;
end
$$;

-- Metadata filters (metadata @> '{"lang": "de"}') use this index.
create index if not exists {{metadata_index}}
  on {{table}} using gin (metadata jsonb_path_ops);

create index if not exists {{fts_index}} on {{table}} using gin (fts);

-- A sync (ingest --sync) reads and deletes the rows of one source. Partial: rows written
-- outside any sync (no source) stay out of it, and their upserts do not maintain it
-- (every upsert of a 6 KB vector row is a new tuple, so it updates every index).
create index if not exists {{source_index}} on {{table}} (source) where source is not null;

-- index:begin
{{index_comment}}
{{index_statement}}
-- index:end

-- The search function of earlier versions took three arguments and returned no
-- content or metadata, then four (no ef_search): replaced by the one below (a changed
-- return type or argument list needs a drop; two overloads would make calls ambiguous).
drop function if exists {{match_function}}(vector, integer, double precision);
drop function if exists {{match_function}}(vector, integer, double precision, jsonb);

-- Nearest sections to query_embedding, best first; similarity = 1 - cosine distance.
-- filter keeps rows whose metadata contains it (JSON containment, '{}' = all rows);
-- match_threshold (if given) drops rows less similar than it. Distance is computed on
-- the indexed expression, so the planner can use the index, and with a filter the
-- HNSW scan goes on until it has match_count rows (pgvector 0.8's iterative scan;
-- relaxed order, so the rows are put back in order at the end). The iterative scan
-- stops at its memory and tuple limits (hnsw.scan_mem_multiplier x work_mem,
-- hnsw.max_scan_tuples): measured, a 1-in-10 filter on 100,000 rows of 1536
-- dimensions came back short when the matching rows were far from the query. Then,
-- and only then, an exact scan of the matching rows answers instead ("+ 0" keeps the
-- index out of its ordering), so k rows come back whenever k rows match. Each call is
-- planned for its own filter (PostgreSQL 18 caches SQL functions' plans: a generic plan,
-- blind to the filter, scanned the whole table: 2 ms became 15-19 ms from the 6th call on).
-- ef_search: candidates the HNSW scan keeps (hnsw.ef_search; at least match_count, at
-- most pgvector's 1,000), {{ef_search}} unless given. pgvector's default, 40, missed a
-- query's whole neighbourhood on clustered vectors (recall@10 0.91-0.94 on 100,000 rows
-- of 1536 dimensions, 0.96-0.99 at 200; some queries found 0 of their 10): see
-- bench/bench_search.py and core/limits.py. Set for this call only (the SET clause below
-- restores the caller's value on return). With a filter, {{ef_search_filtered}}: pgvector's
-- iterative scan fills each round of ef_search candidates with rows the filter mostly
-- drops (a 1-in-10 filter: recall@10 0.95 at 200, 0.96-0.99 at 400).
-- Which scan: the planner's choice between the HNSW scan and a scan of all rows (or
-- of the filter's GIN bitmap) turned on ef_search (pgvector's cost estimate) and left
-- out the vectors stored out of line: on 100,000 rows it scanned them all at ef_search
-- 100 and 300 (0.5-1 s against 5-30 ms). So the function decides: exactly when the
-- filter matches fewer than {{exact_below_matches}} rows (counted through its GIN index; a
-- 1-in-200 filter: 5 ms and every true neighbour, against 50-65 ms through HNSW) or the
-- table has fewer than {{exact_below}}, else through the index. The table's size: PostgreSQL's
-- estimate (pg_class.reltuples, set by an index build, ANALYZE and autovacuum) when that
-- says large, else counted up to {{exact_below}} (the estimate lags a table filled since).
-- Security invoker (the default): row level security applies to the caller.
--
-- The exact answer: the `match_count` rows whose metadata contains `filter` nearest
-- query_embedding, every distance computed ("+ 0" keeps the HNSW index out of the
-- ordering), by whichever scan the planner finds cheapest (the filter's GIN bitmap, or
-- all rows): the search function below answers with it for a small table, or when its
-- HNSW scan comes back short.
create or replace function {{exact_function}}(
  query_embedding vector({{dimensions}}), match_count int, filter jsonb
)
returns table (
  section_id {{id_type}}, title text, content text, metadata jsonb, distance double precision
)
language sql stable
set enable_seqscan = on
set enable_bitmapscan = on
set plan_cache_mode = 'force_custom_plan'
as $$
  select t.section_id, t.title, t.content, t.metadata, ({{order_key}} <=> {{order_query}}) + 0 as distance
  from {{table}} t
  where t.metadata @> coalesce(filter, '{}'::jsonb)
  order by 5
  limit match_count;
$$;

-- How many rows (up to `most`) a filter matches, through its GIN index: how the search
-- function below tells a selective filter (answered exactly) from a broad one.
create or replace function {{count_function}}(filter jsonb, most int)
returns bigint
language sql stable
set enable_seqscan = off
set enable_bitmapscan = on
as $$
  select count(*) from (select from {{table}} t where t.metadata @> filter limit most) r;
$$;

create or replace function {{match_function}}(
  query_embedding vector({{dimensions}}),
  match_count int default 5,
  match_threshold double precision default null,
  filter jsonb default '{}'::jsonb,
  ef_search int default null
)
returns table (
  section_id {{id_type}}, title text, content text, metadata jsonb, similarity double precision
)
language sql stable
set hnsw.iterative_scan = 'relaxed_order'
set hnsw.ef_search = {{ef_search}}
set enable_seqscan = off
set enable_bitmapscan = off
set plan_cache_mode = 'force_custom_plan'
as $$
  select set_config('hnsw.ef_search', least(1000, greatest(
    coalesce(ef_search, case when coalesce(filter, '{}'::jsonb) = '{}'::jsonb then {{ef_search}} else {{ef_search_filtered}} end),
    match_count, 1))::text, true);
  with small as (
    select case
      when coalesce(filter, '{}'::jsonb) <> '{}'::jsonb
        and {{count_function}}(filter, {{exact_below_matches}}) < {{exact_below_matches}}
      then true
      when coalesce((select c.reltuples from pg_class c where c.oid = to_regclass('{{table}}')), -1) >= {{exact_below}}
      then false
      else (select count(*) from (select from {{table}} limit {{exact_below}}) r) < {{exact_below}}
    end as yes
  ),
  nearest as materialized (
    select t.section_id, t.title, t.content, t.metadata, {{order_key}} <=> {{order_query}} as distance
    from {{table}} t
    where not (select yes from small) and t.metadata @> coalesce(filter, '{}'::jsonb)
    order by {{order_key}} <=> {{order_query}}
    limit match_count
  ),
  short as (
    select (select yes from small)
        or ((select count(*) from nearest) < match_count and coalesce(filter, '{}'::jsonb) <> '{}'::jsonb) as yes
  ),
  exact as materialized (
    select e.* from short s cross join lateral {{exact_function}}(query_embedding, match_count, filter) e
    where s.yes
  ),
  chosen as (
    select * from nearest where not (select yes from short)
    union all
    select * from exact
  )
  select c.section_id, c.title, c.content, c.metadata, 1 - c.distance as similarity
  from chosen c
  where match_threshold is null or 1 - c.distance >= match_threshold
  order by c.distance;
$$;

-- Hybrid search: the rows nearest query_embedding and the rows whose text best matches
-- query_text (websearch syntax: words, "a phrase", -not), fused by reciprocal rank
-- (score = sum of weight / (rrf_k + rank) over the two lists), as Supabase's hybrid
-- search guide does; on equal scores the row that matches the words comes first;
-- similarity is still the cosine similarity.
-- ef_search as in the search function above.
drop function if exists {{hybrid_function}}(text, vector, integer, jsonb, double precision, double precision, integer);
create or replace function {{hybrid_function}}(
  query_text text,
  query_embedding vector({{dimensions}}),
  match_count int default 5,
  filter jsonb default '{}'::jsonb,
  full_text_weight double precision default 1,
  semantic_weight double precision default 1,
  rrf_k int default 50,
  ef_search int default null
)
returns table (
  section_id {{id_type}}, title text, content text, metadata jsonb, similarity double precision
)
language sql stable
set hnsw.iterative_scan = 'relaxed_order'
set hnsw.ef_search = {{ef_search}}
set plan_cache_mode = 'force_custom_plan'
as $$
  select set_config('hnsw.ef_search', least(1000, greatest(coalesce(ef_search, {{ef_search}}), match_count * 2, 1))::text, true);
  with full_text as (
    select t.section_id,
           row_number() over (order by ts_rank_cd(t.fts, websearch_to_tsquery('simple', query_text)) desc) as rank_ix
    from {{table}} t
    where t.fts @@ websearch_to_tsquery('simple', query_text) and t.metadata @> coalesce(filter, '{}'::jsonb)
    order by rank_ix
    limit match_count * 2
  ),
  semantic as (
    select n.section_id, row_number() over (order by n.distance) as rank_ix
    from (
      select t.section_id, {{order_key}} <=> {{order_query}} as distance
      from {{table}} t
      where t.metadata @> coalesce(filter, '{}'::jsonb)
      order by {{order_key}} <=> {{order_query}}
      limit match_count * 2
    ) n
  )
  select t.section_id, t.title, t.content, t.metadata, 1 - ({{order_key}} <=> {{order_query}}) as similarity
  from full_text f
  full outer join semantic s on f.section_id = s.section_id
  join {{table}} t on t.section_id = coalesce(f.section_id, s.section_id)
  order by coalesce(1.0 / (rrf_k + f.rank_ix), 0.0) * full_text_weight
         + coalesce(1.0 / (rrf_k + s.rank_ix), 0.0) * semantic_weight desc,
           f.rank_ix nulls last, s.rank_ix  -- a tie goes to the row that matches the words
  limit match_count;
$$;

-- Syncs of one source into one table take turns: where a session cannot hold an
-- advisory lock (PostgREST: a transaction per request), a row in this table is the
-- lock, renewed while the sync runs and free once it expires.
create table if not exists core_sync_locks (
  table_name text not null,
  source text not null,
  holder text not null,
  expires_at timestamptz not null,
  primary key (table_name, source)
);
alter table core_sync_locks enable row level security;

-- Take (or renew) the lock of (table, source) for holder; returns the holder that has it.
create or replace function core_sync_lock(
  lock_table text, lock_source text, lock_holder text, ttl_seconds int default 600
)
returns text
language sql volatile
as $$
  insert into core_sync_locks as l (table_name, source, holder, expires_at)
  values (lock_table, lock_source, lock_holder, now() + make_interval(secs => ttl_seconds))
  on conflict (table_name, source) do update
    set holder = excluded.holder, expires_at = excluded.expires_at
    where l.holder = excluded.holder or l.expires_at < now();
  select holder from core_sync_locks where table_name = lock_table and source = lock_source;
$$;

create or replace function core_sync_unlock(lock_table text, lock_source text, lock_holder text)
returns void
language sql volatile
as $$
  delete from core_sync_locks where table_name = lock_table and source = lock_source and holder = lock_holder;
$$;

-- Row level security on, with deliberately no policy: clients using the anon or an
-- authenticated key read and write nothing (search included). Ingest writes with
-- the service-role key, which bypasses RLS. Add a "for select" policy to let
-- other roles search.
alter table {{table}} enable row level security;
