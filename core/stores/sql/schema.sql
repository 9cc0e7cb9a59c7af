-- Section embeddings: one row per document section, searched by cosine similarity.
--
-- Table {{table}}, {{dimensions}}-dimensional vectors, search function {{match_function}}().
-- Safe to run again: every statement is idempotent (if not exists / create or replace).
-- Paste into Supabase's SQL editor, or run with psql / core.schema.apply_schema().

create extension if not exists vector;

-- One row per section. content_hash + model let the ingest skip unchanged sections.
create table if not exists {{table}} (
  section_id bigint primary key,
  title text,
  embedding vector({{dimensions}}) not null,
  model text not null,
  content_hash text not null,
  token_count integer,
  updated_at timestamptz not null default now()
);

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

-- index:begin
{{index_comment}}
{{index_statement}}
-- index:end

-- Nearest sections to query_embedding, best first; similarity = 1 - cosine distance.
-- match_threshold (if given) drops rows less similar than it. Distance is computed
-- on the indexed expression, so the planner can use the index.
-- Security invoker (the default): row level security applies to the caller.
create or replace function {{match_function}}(
  query_embedding vector({{dimensions}}),
  match_count int default 5,
  match_threshold double precision default null
)
returns table (section_id bigint, title text, similarity double precision)
language sql stable
as $$
  select t.section_id, t.title, 1 - ({{order_key}} <=> {{order_query}}) as similarity
  from {{table}} t
  where match_threshold is null
     or 1 - ({{order_key}} <=> {{order_query}}) >= match_threshold
  order by {{order_key}} <=> {{order_query}}
  limit match_count;
$$;

-- Row level security on, with deliberately no policy: clients using the anon or an
-- authenticated key read and write nothing (search included). Ingest writes with
-- the service-role key, which bypasses RLS. Add a "for select" policy to let
-- other roles search.
alter table {{table}} enable row level security;
