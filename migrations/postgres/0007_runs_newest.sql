-- The runs, newest first, ties broken by id: a page of `list` or of the web
-- page is read from here in order, without a sort.
CREATE INDEX runs_newest ON runs (created_at DESC, id DESC);
DROP INDEX runs_created;
