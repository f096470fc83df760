-- Slugs never look like ids (issue 10): an org or workspace slug that parses as a UUID (32 hex
-- digits, or the hyphenated 8-4-4-4-12 form, any case) is renamed `slug-<old slug>` (what a
-- name equal to an id now derives), or `renamed-<16 random hex>` when that is taken.

-- The id-shaped slugs of both tables, tested in one place. Renaming gives slugs that start with
-- a letter and are never id-shaped, so renaming orgs does not change what workspaces need.
CREATE TEMP TABLE id_shaped_slugs AS
SELECT slug FROM (SELECT slug FROM orgs UNION SELECT slug FROM workspaces)
WHERE (length(slug) = 32 AND slug NOT GLOB '*[^0-9a-fA-F]*')
   OR (length(slug) = 36
       AND substr(slug, 9, 1) = '-' AND substr(slug, 14, 1) = '-'
       AND substr(slug, 19, 1) = '-' AND substr(slug, 24, 1) = '-'
       AND length(replace(slug, '-', '')) = 32
       AND replace(slug, '-', '') NOT GLOB '*[^0-9a-fA-F]*');

UPDATE orgs
SET slug = CASE
        WHEN EXISTS (SELECT 1 FROM orgs o WHERE o.slug = 'slug-' || lower(orgs.slug))
            THEN 'renamed-' || lower(hex(randomblob(8)))
        ELSE 'slug-' || lower(orgs.slug)
    END
WHERE slug IN (SELECT slug FROM id_shaped_slugs);

UPDATE workspaces
SET slug = CASE
        WHEN EXISTS (SELECT 1 FROM workspaces o
                     WHERE o.org_id = workspaces.org_id AND o.slug = 'slug-' || lower(workspaces.slug))
            THEN 'renamed-' || lower(hex(randomblob(8)))
        ELSE 'slug-' || lower(workspaces.slug)
    END
WHERE slug IN (SELECT slug FROM id_shaped_slugs);

DROP TABLE id_shaped_slugs;
